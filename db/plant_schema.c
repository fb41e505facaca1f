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
};

const int plant_schema_version =
    (int)(sizeof(plant_migrations) / sizeof(plant_migrations[0]));
