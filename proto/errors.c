/* errors.c - lookups generated from the CHORUS_ERRORS table. */
#include "errors.h"

static const struct {
    const char *str;
    int http;
} err_table[CHORUS_ERR__COUNT] = {
#define CHORUS__ERR_ROW(name, str, http) [CHORUS_ERR_##name] = {str, http},
    CHORUS_ERRORS(CHORUS__ERR_ROW)
#undef CHORUS__ERR_ROW
};

const char *chorus_err_str(enum chorus_err code)
{
    if ((unsigned)code >= CHORUS_ERR__COUNT)
        return "internal";
    return err_table[code].str;
}

int chorus_err_http_status(enum chorus_err code)
{
    if ((unsigned)code >= CHORUS_ERR__COUNT)
        return 500;
    return err_table[code].http;
}
