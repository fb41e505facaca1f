/*
 * plant_admin.c: the administrator's side of the plant registry
 * (plant_init, plant.h).
 */
#include "db/plant.h"

#include <stdio.h>

#include "common/err.h"

int
plant_init(const char *admin_conninfo, const char *station_role,
    const char *password_file, char *why, size_t whysz)
{
	(void)admin_conninfo;
	(void)station_role;
	(void)password_file;
	snprintf(why, whysz, "not built yet");
	return KL_ERR_UNSUPPORTED;
}
