// tests/tools/openapi/check.mjs: docs/openapi.yaml against the OpenAPI 3.0
// schema, and live answers of the status API against docs/openapi.yaml
// (tests/integration/150-openapi.sh).
//
//   node check.mjs lint SPEC
//       swagger-parser's validation (the OpenAPI 3.0 JSON schema, $refs,
//       path parameters), then this project's rule that the spec leaves
//       nothing out: every object schema has additionalProperties: false
//       and requires each of its properties (the station always sends
//       every key; a nullable one is null, not absent); every schema
//       compiles in ajv, unique operationIds, a 401 where the token is
//       needed.  Then prints "path P" for each of the spec's paths.
//   node check.mjs paths SPEC
//       the spec's paths, one a line.
//   node check.mjs responses SPEC CASES
//       CASES: one answer a line, "PATH-TEMPLATE STATUS CONTENT-TYPE FILE"
//       (FILE holds the body).  Each is checked against paths[TEMPLATE].get
//       .responses[STATUS]: the status must be documented, the content
//       type one the response lists, and a JSON body valid against its
//       schema (ajv, strict, all errors).  Prints "ok" or "FAIL: errors"
//       per answer; exits 1 if any failed.  A line ending in " invalid"
//       is a negative control (a doctored answer): it must be refused,
//       and prints "refused ...: errors" (FAIL if it passed).
//
// OpenAPI 3.0 schema objects are a dialect of JSON Schema draft 4/5: ajv 8
// takes "nullable" as it is (null allowed besides "type"; an enum must
// then list null itself, as the spec's do); "example" is declared as an
// annotation, and the formats the spec uses are defined below, so that an
// unknown keyword or format is an error rather than ignored.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const SwaggerParser = require("@apidevtools/swagger-parser");
const Ajv = require("ajv");

function die(msg) {
	process.stderr.write(`check.mjs: ${msg}\n`);
	process.exit(2);
}

const INT32_MIN = -2147483648, INT32_MAX = 2147483647;

function newAjv() {
	const ajv = new Ajv({ strict: true, allErrors: true });
	ajv.addKeyword({ keyword: "example", schemaType: ["string", "number",
	    "integer", "boolean", "object", "array", "null"] });
	ajv.addFormat("int32", { type: "number",
	    validate: (n) => Number.isInteger(n) && n >= INT32_MIN && n <= INT32_MAX });
	ajv.addFormat("int64", { type: "number", validate: Number.isSafeInteger });
	ajv.addFormat("double", { type: "number", validate: Number.isFinite });
	return ajv;
}

// Every object schema closed and complete; returns the problems.
function completeness(spec) {
	const problems = [];
	const walk = (s, where) => {
		if (s === null || typeof s !== "object")
			return;
		if (Array.isArray(s)) {
			s.forEach((x, i) => walk(x, `${where}[${i}]`));
			return;
		}
		if (s.type === "object" || s.properties !== undefined) {
			if (s.additionalProperties !== false)
				problems.push(`${where}: additionalProperties is not false`);
			const props = Object.keys(s.properties || {});
			const req = new Set(s.required || []);
			for (const p of props)
				if (!req.has(p))
					problems.push(`${where}: property ${p} is not required`);
			for (const r of req)
				if (!props.includes(r))
					problems.push(`${where}: required ${r} is no property`);
			for (const p of props)
				walk(s.properties[p], `${where}.${p}`);
		}
		if (s.items !== undefined)
			walk(s.items, `${where}[]`);
		for (const k of ["allOf", "anyOf", "oneOf"])
			if (s[k] !== undefined)
				problems.push(`${where}: ${k} (keep schemas plain, closed objects)`);
		if (s.nullable === true && Array.isArray(s.enum) && !s.enum.includes(null))
			problems.push(`${where}: nullable enum without null`);
	};
	for (const [name, s] of Object.entries(spec.components?.schemas || {}))
		walk(s, `components.schemas.${name}`);
	// Inline schemas in responses.
	for (const [p, item] of Object.entries(spec.paths || {}))
		for (const [m, op] of Object.entries(item))
			for (const [st, r] of Object.entries(op.responses || {}))
				for (const [ct, mt] of Object.entries(r.content || {}))
					if (mt.schema && mt.schema.$ref === undefined)
						walk(mt.schema, `${m} ${p} ${st} ${ct}`);
	return problems;
}

async function lint(file) {
	try {
		await SwaggerParser.validate(file);
	} catch (e) {
		console.log(`FAIL ${file}: ${e.message}`);
		return 1;
	}
	const raw = await SwaggerParser.parse(file);
	if (!/^3\.0\.\d+$/.test(raw.openapi || "")) {
		console.log(`FAIL ${file}: openapi ${raw.openapi}, expected 3.0.x`);
		return 1;
	}
	const problems = completeness(raw);
	// Every schema must compile under the strict ajv used for answers.
	const api = await SwaggerParser.dereference(file);
	const ajv = newAjv();
	for (const [p, item] of Object.entries(api.paths))
		for (const [m, op] of Object.entries(item))
			for (const [st, r] of Object.entries(op.responses || {}))
				for (const [ct, mt] of Object.entries(r.content || {}))
					if (mt.schema) {
						try {
							ajv.compile(mt.schema);
						} catch (e) {
							problems.push(`${m} ${p} ${st} ${ct}: ${e.message}`);
						}
					}
	// Examples must be valid against their own schemas.
	for (const [name, sch] of Object.entries(api.components?.schemas || {}))
		if (sch.example !== undefined) {
			try {
				const v = ajv.compile(sch);
				if (!v(sch.example))
					problems.push(`components.schemas.${name}: example invalid: ` +
					    v.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; "));
			} catch (e) {
				problems.push(`components.schemas.${name}: ${e.message}`);
			}
		}
	// Parameters too: an unknown format is an error there as well.
	for (const [p, item] of Object.entries(api.paths))
		for (const [m, op] of Object.entries(item))
			for (const prm of op.parameters || []) {
				try {
					ajv.compile(prm.schema);
				} catch (e) {
					problems.push(`${m} ${p} parameter ${prm.name}: ${e.message}`);
				}
			}
	// What a client generator needs: one name per operation, and a 401
	// documented wherever the token is needed.
	const ids = new Map();
	for (const [p, item] of Object.entries(raw.paths))
		for (const [m, op] of Object.entries(item)) {
			if (!op.operationId)
				problems.push(`${m} ${p}: no operationId`);
			else if (ids.has(op.operationId))
				problems.push(`${m} ${p}: operationId ${op.operationId} also at ${ids.get(op.operationId)}`);
			else
				ids.set(op.operationId, `${m} ${p}`);
			const secured = (op.security ?? raw.security ?? []).length > 0;
			if (secured !== (op.responses?.["401"] !== undefined))
				problems.push(`${m} ${p}: ${secured ? "needs the token but documents no 401" : "documents a 401 but needs no token"}`);
		}
	for (const pr of problems)
		console.log(`FAIL ${pr}`);
	if (problems.length > 0)
		return 1;
	console.log(`ok ${file}: OpenAPI ${raw.openapi}, ${Object.keys(raw.paths).length} paths`);
	for (const p of Object.keys(raw.paths))
		console.log(`path ${p}`);
	return 0;
}

async function paths(file) {
	const raw = await SwaggerParser.parse(file);
	for (const p of Object.keys(raw.paths))
		console.log(p);
	return 0;
}

async function responses(file, casesFile) {
	// lint validates the file; here it is only read.
	const api = await SwaggerParser.dereference(file);
	const ajv = newAjv();
	const lines = fs.readFileSync(casesFile, "utf8").split("\n")
	    .filter((l) => l.trim() !== "");
	let failed = 0, controls = 0;
	for (const line of lines) {
		const [tpl, status, ctype, body, expect] = line.split(" ");
		if (body === undefined || (expect !== undefined && expect !== "invalid"))
			die(`bad case line: ${line}`);
		const errs = [];
		const op = api.paths[tpl]?.get;
		const resp = op?.responses?.[status] ?? op?.responses?.default;
		if (op === undefined)
			errs.push(`no GET ${tpl} in the spec`);
		else if (resp === undefined)
			errs.push(`status ${status} is not documented for GET ${tpl}`);
		else if (resp.content === undefined) {
			// 304: documented without a body, and none sent (curl
			// writes no file for an empty one).
			const text = fs.existsSync(body) ? fs.readFileSync(body, "utf8") : "";
			if (text.length !== 0)
				errs.push(`a body where the spec documents none for ${status}`);
		} else {
			const media = ctype.split(";")[0].trim().toLowerCase();
			const mt = resp.content?.[media];
			const text = fs.readFileSync(body, "utf8");
			if (mt === undefined)
				errs.push(`content type ${ctype} is not documented for ${status} ` +
				    `(documented: ${Object.keys(resp.content || {}).join(", ") || "none"})`);
			else if (media === "application/json") {
				let data;
				try {
					data = JSON.parse(text);
				} catch (e) {
					errs.push(`body is not JSON: ${e.message}`);
				}
				// The body says its status again (the Error schema).
				const said = data?.error?.status;
				if (said !== undefined && String(said) !== status)
					errs.push(`/error/status ${said} is not the answer's status ${status}`);
				if (data !== undefined && mt.schema !== undefined) {
					const v = ajv.compile(mt.schema);
					if (!v(data))
						for (const e of v.errors)
							errs.push(`${e.instancePath || "/"} ${e.message}` +
							    (e.params?.additionalProperty !== undefined ?
							    `: ${e.params.additionalProperty}` : "") +
							    (e.params?.allowedValues !== undefined ?
							    `: ${JSON.stringify(e.params.allowedValues)}` : ""));
				}
			} else if (mt.schema?.type === "string" && text.length === 0)
				errs.push("empty body");
		}
		// A negative control ("invalid") must be refused; its reasons are
		// printed on its line for the caller to check.
		if (expect === "invalid") {
			controls++;
			if (errs.length > 0)
				console.log(`refused ${tpl} ${status} ${body}: ${errs.join("; ")}`);
			else {
				failed++;
				console.log(`FAIL ${tpl} ${status} ${body}: a doctored answer passed`);
			}
		} else if (errs.length === 0)
			console.log(`ok ${tpl} ${status} ${body}`);
		else {
			failed++;
			console.log(`FAIL ${tpl} ${status} ${body}: ${errs.join("; ")}`);
		}
	}
	console.log(`${lines.length - controls - failed} answers valid, ` +
	    `${controls} controls refused, ${failed} failed`);
	return failed === 0 ? 0 : 1;
}

const [cmd, spec, cases] = process.argv.slice(2);
if (spec === undefined)
	die("usage: check.mjs lint|paths|responses SPEC [CASES]");
let rc;
if (cmd === "lint")
	rc = await lint(spec);
else if (cmd === "paths")
	rc = await paths(spec);
else if (cmd === "responses" && cases !== undefined)
	rc = await responses(spec, cases);
else
	die(`unknown command ${cmd}`);
process.exit(rc);
