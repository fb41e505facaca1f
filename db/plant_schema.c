/*
 * plant_schema.c: the plant registry's schema on PostgreSQL (plant.h,
 * docs/plant.md), as migrations: entry i takes keyline_schema.version i to
 * i + 1.  Only ever append; an applied entry is never edited.  Run by the
 * administrator (plant_init), owned by the admin role; stations get the
 * grants plant_init gives their role, never ownership.
 */
#include "db/plant.h"

const char *const plant_migrations[] = {
	/* 0 -> 1: devices, their history, the append-only rule. */
	"CREATE TABLE devices ("
	" device_id text PRIMARY KEY,"
	" state text NOT NULL CHECK (state IN ('claimed', 'released',"
	"  'provisioned')),"
	" station text NOT NULL,"
	" slot integer NOT NULL,"
	" board_serial text,"
	" claimed_at timestamptz NOT NULL DEFAULT now(),"
	" lease_until timestamptz,"
	" key_fpr text,"
	" cert_serial text,"
	" cert_fpr text,"
	" provisioned_at timestamptz,"
	/* Where the certificate in force was made: a re-provisioning claim
	 * by another station changes station/slot, not these. */
	" made_station text,"
	" made_slot integer,"
	" reprovisions integer NOT NULL DEFAULT 0);"
	"CREATE TABLE device_history ("
	" id bigserial PRIMARY KEY,"
	" time timestamptz NOT NULL DEFAULT now(),"
	" device_id text NOT NULL,"
	" station text NOT NULL,"
	" slot integer NOT NULL,"
	" board_serial text,"
	" event text NOT NULL,"
	" detail text);"
	"CREATE INDEX device_history_device ON device_history(device_id);"
	"CREATE FUNCTION keyline_append_only() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	"  RAISE EXCEPTION 'keyline: % is append-only', TG_TABLE_NAME;"
	" END $$;"
	"CREATE TRIGGER device_history_append_only"
	" BEFORE UPDATE OR DELETE ON device_history"
	" FOR EACH ROW EXECUTE FUNCTION keyline_append_only();"
	"CREATE TRIGGER device_history_no_truncate"
	" BEFORE TRUNCATE ON device_history"
	" FOR EACH STATEMENT EXECUTE FUNCTION keyline_append_only();"
	/* A device row is current state: it changes, but never goes. */
	"CREATE TRIGGER devices_no_delete"
	" BEFORE DELETE ON devices"
	" FOR EACH ROW EXECUTE FUNCTION keyline_append_only();"
	"CREATE TRIGGER devices_no_truncate"
	" BEFORE TRUNCATE ON devices"
	" FOR EACH STATEMENT EXECUTE FUNCTION keyline_append_only();",
	/*
	 * 1 -> 2: audit_rows, every station's audit log shipped (db/ship.c,
	 * docs/plant.md "Audit shipping").  Columns mirror the station's
	 * SQLite events table so the row hash can be recomputed here: seq is
	 * the local id, time the stored text (not a timestamptz, which would
	 * normalise it), board_serial bytea (a board's bytes need not be
	 * UTF-8).  The trigger makes each station's rows one chain: a row
	 * must be its station's last seq + 1 with that row's row_hash as its
	 * prev_hash (seq 1: 64 '0').  The same row sent again (a shipper
	 * that died before it saw its COMMIT) is skipped; another row under
	 * a seq already held is refused.  SQLSTATE KL001 and KL002 let the
	 * shipper tell a refusal from any other error.
	 */
	"CREATE TABLE audit_rows ("
	" station text NOT NULL,"
	" seq bigint NOT NULL CHECK (seq >= 1),"
	" time text NOT NULL,"
	" operator text,"
	" slot bigint NOT NULL,"
	" board_serial bytea,"
	" device_id text,"
	" step text,"
	" outcome text,"
	" key_fpr text,"
	" cert_serial text,"
	" cert_fpr text,"
	" ca text,"
	" error text,"
	" prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),"
	" row_hash text NOT NULL CHECK (row_hash ~ '^[0-9a-f]{64}$'),"
	" shipped_at timestamptz NOT NULL DEFAULT now(),"
	" PRIMARY KEY (station, seq));"
	"CREATE INDEX audit_rows_device ON audit_rows(device_id);"
	"CREATE FUNCTION keyline_audit_chain() RETURNS trigger"
	" LANGUAGE plpgsql AS $$"
	" DECLARE last audit_rows%ROWTYPE; held audit_rows%ROWTYPE;"
	" BEGIN"
	"  SELECT * INTO last FROM audit_rows WHERE station = NEW.station"
	"   ORDER BY seq DESC LIMIT 1;"
	"  IF FOUND AND NEW.seq <= last.seq THEN"
	"   SELECT * INTO held FROM audit_rows"
	"    WHERE station = NEW.station AND seq = NEW.seq;"
	"   IF FOUND AND (held.time, held.operator, held.slot,"
	"     held.board_serial, held.device_id, held.step, held.outcome,"
	"     held.key_fpr, held.cert_serial, held.cert_fpr, held.ca,"
	"     held.error, held.prev_hash, held.row_hash)"
	"    IS NOT DISTINCT FROM (NEW.time, NEW.operator, NEW.slot,"
	"     NEW.board_serial, NEW.device_id, NEW.step, NEW.outcome,"
	"     NEW.key_fpr, NEW.cert_serial, NEW.cert_fpr, NEW.ca,"
	"     NEW.error, NEW.prev_hash, NEW.row_hash) THEN"
	"    RETURN NULL;"
	"   END IF;"
	"   RAISE EXCEPTION 'keyline: station % row % is already in the"
	" plant store with other contents (row_hash %, this one %)',"
	"    NEW.station, NEW.seq, held.row_hash, NEW.row_hash"
	"    USING ERRCODE = 'KL002';"
	"  END IF;"
	"  IF NEW.seq <> COALESCE(last.seq, 0) + 1 THEN"
	"   RAISE EXCEPTION 'keyline: station % row % does not chain: the"
	" plant store''s last row of that station is %', NEW.station,"
	"    NEW.seq, COALESCE(last.seq, 0) USING ERRCODE = 'KL001';"
	"  END IF;"
	"  IF NEW.prev_hash <> COALESCE(last.row_hash, repeat('0', 64)) THEN"
	"   RAISE EXCEPTION 'keyline: station % row % does not chain: its"
	" prev_hash % is not the row_hash of row % (%)', NEW.station,"
	"    NEW.seq, NEW.prev_hash, COALESCE(last.seq, 0),"
	"    COALESCE(last.row_hash, repeat('0', 64)) USING ERRCODE = 'KL001';"
	"  END IF;"
	"  NEW.shipped_at := now();"
	"  RETURN NEW;"
	" END $$;"
	"CREATE TRIGGER audit_rows_chain"
	" BEFORE INSERT ON audit_rows"
	" FOR EACH ROW EXECUTE FUNCTION keyline_audit_chain();"
	"CREATE TRIGGER audit_rows_append_only"
	" BEFORE UPDATE OR DELETE ON audit_rows"
	" FOR EACH ROW EXECUTE FUNCTION keyline_append_only();"
	"CREATE TRIGGER audit_rows_no_truncate"
	" BEFORE TRUNCATE ON audit_rows"
	" FOR EACH STATEMENT EXECUTE FUNCTION keyline_append_only();",
	/* 2 -> 3: a device's certificate record changes only when a claim
	 * becomes provisioned (a station role may UPDATE devices to claim
	 * and record, but not rewrite what another station made); the
	 * views an MES reads (docs/plant.md, "For the MES"). */
	"CREATE FUNCTION keyline_devices_guard() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	"  IF NEW.device_id <> OLD.device_id THEN"
	"   RAISE EXCEPTION 'keyline: a device ID does not change';"
	"  END IF;"
	"  IF NOT (OLD.state = 'claimed' AND NEW.state = 'provisioned') AND"
	"   (NEW.key_fpr IS DISTINCT FROM OLD.key_fpr OR"
	"    NEW.cert_serial IS DISTINCT FROM OLD.cert_serial OR"
	"    NEW.cert_fpr IS DISTINCT FROM OLD.cert_fpr OR"
	"    NEW.made_station IS DISTINCT FROM OLD.made_station OR"
	"    NEW.made_slot IS DISTINCT FROM OLD.made_slot OR"
	"    NEW.provisioned_at IS DISTINCT FROM OLD.provisioned_at) THEN"
	"   RAISE EXCEPTION 'keyline: device %: its certificate record changes"
	" only when a claim becomes provisioned', OLD.device_id;"
	"  END IF;"
	"  RETURN NEW;"
	" END $$;"
	"CREATE TRIGGER devices_guard BEFORE UPDATE ON devices"
	" FOR EACH ROW EXECUTE FUNCTION keyline_devices_guard();"
	"CREATE VIEW mes_devices AS SELECT device_id, state,"
	" made_station AS station, made_slot AS slot, board_serial,"
	" cert_serial, cert_fpr, key_fpr, provisioned_at, reprovisions"
	" FROM devices WHERE made_station IS NOT NULL;"
	"CREATE VIEW mes_events AS SELECT id, time, device_id, station, slot,"
	" board_serial, event, detail FROM device_history;"
	"CREATE VIEW mes_station_yield AS SELECT station,"
	" date_trunc('hour', time) AS hour,"
	" count(*) FILTER (WHERE event IN ('claim', 'reprovision'))"
	"  AS started,"
	" count(*) FILTER (WHERE event = 'provisioned') AS provisioned,"
	" count(*) FILTER (WHERE event = 'released') AS failed_before_cert"
	" FROM device_history GROUP BY station, date_trunc('hour', time);",
	/*
	 * 3 -> 4: conflicts found after an outage ([registry] offline =
	 * local, docs/plant.md "offline = local"): a station that
	 * provisioned a device while the registry was unreachable, and found
	 * on reconnecting that the registry gives the device ID to another
	 * board, records it here, with both sides.  One row per (device,
	 * station, certificate): a station reconciling again after a crash
	 * adds nothing.  Append-only like the history.
	 */
	"CREATE TABLE device_conflicts ("
	" id bigserial PRIMARY KEY,"
	" detected_at timestamptz NOT NULL DEFAULT now(),"
	" device_id text NOT NULL,"
	" station text NOT NULL,"
	" slot integer NOT NULL,"
	" board_serial text,"
	" key_fpr text,"
	" cert_serial text,"
	" cert_fpr text NOT NULL,"
	" made_at timestamptz,"
	" holder_state text NOT NULL,"
	" holder_station text NOT NULL,"
	" holder_slot integer,"
	" holder_board_serial text,"
	" holder_cert_serial text,"
	" holder_cert_fpr text,"
	" holder_time timestamptz,"
	" UNIQUE (device_id, station, cert_fpr));"
	"CREATE INDEX device_conflicts_station ON device_conflicts(station);"
	"CREATE INDEX device_conflicts_holder"
	" ON device_conflicts(holder_station);"
	"CREATE TRIGGER device_conflicts_append_only"
	" BEFORE UPDATE OR DELETE ON device_conflicts"
	" FOR EACH ROW EXECUTE FUNCTION keyline_append_only();"
	"CREATE TRIGGER device_conflicts_no_truncate"
	" BEFORE TRUNCATE ON device_conflicts"
	" FOR EACH STATEMENT EXECUTE FUNCTION keyline_append_only();"
	"CREATE VIEW mes_conflicts AS SELECT id, detected_at, device_id,"
	" station, slot, board_serial, cert_serial, made_at, holder_state,"
	" holder_station, holder_slot, holder_board_serial,"
	" holder_cert_serial, holder_time FROM device_conflicts;",
	/*
	 * 4 -> 5: a conflict's id and time are the server's, given in
	 * commit order.  Stations read conflicts by "id greater than the
	 * last one I wrote down": an id chosen by an inserter (any station
	 * role may insert) could push that cursor past every real one, and
	 * ids from a sequence commit out of order (two stations reporting
	 * at once), so one could be passed by.  The trigger takes a
	 * transaction-long lock before it takes the next id, so the
	 * inserters of conflicts queue and commit in id order.
	 */
	"CREATE FUNCTION keyline_conflict_id() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	"  PERFORM pg_advisory_xact_lock(4907, 1);"
	"  NEW.id := nextval('device_conflicts_id_seq');"
	"  NEW.detected_at := now();"
	"  RETURN NEW;"
	" END $$;"
	"CREATE TRIGGER device_conflicts_id BEFORE INSERT ON device_conflicts"
	" FOR EACH ROW EXECUTE FUNCTION keyline_conflict_id();",
};

const int plant_schema_version =
    (int)(sizeof(plant_migrations) / sizeof(plant_migrations[0]));
