/* auth.h - who a token says a client is, and what a namespace lets it do.
 *
 * Tokens are JWTs verified by libjwt (Debian's libjwt 1.10): HS256 with a
 * shared secret, RS256 or ES256 with a PEM public key. The algorithm a token
 * names must be one the configured keys can check, and the key is chosen by
 * that algorithm, so an RS256 public key can never be used as an HS256 secret
 * and `alg: none` is never accepted. libjwt 1.10 checks signatures only;
 * exp, nbf and the claims Chorus needs are checked here.
 *
 * This file holds no connection state and never touches the network, so
 * tests/unit/test_auth.c drives it directly; auth_ws.c applies it to
 * WebSocket connections (PROTOCOL.md section 8). */
#ifndef CHORUS_AUTH_H
#define CHORUS_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Longest token accepted anywhere (query, sub-protocol, auth op, sub request). */
#define AUTH_TOKEN_MAX 8192
/* Longest upgrade query string (lws' count: its arguments without the '&'s):
 * "token=" and a token of AUTH_TOKEN_MAX, with room for a few short others. */
#define AUTH_QUERY_MAX (AUTH_TOKEN_MAX + 256)
/* Longest user id (the "sub" claim). */
#define AUTH_USER_MAX 128

/* The verification keys; one of these exists per process (auth_ws.c) and
 * tests make their own. */
struct auth_keys {
    unsigned char *secret;        /* HS256; NULL when not configured */
    size_t secret_len;
    unsigned char *pem;           /* RS256 or ES256 public key, PEM text */
    size_t pem_len;
    int pem_alg;                  /* the one algorithm pem can check (a jwt_alg_t) */
    int leeway;                   /* seconds of clock skew allowed for exp and nbf */
};

/* Loads the keys. `pem` (may be NULL) is the text of a PEM public key; an RSA
 * key allows RS256, a P-256 EC key ES256. Returns 0, or -1 with a reason in
 * err. */
int auth_keys_init(struct auth_keys *k, const char *secret, const char *pem, size_t pem_len,
                   int leeway, char *err, size_t errlen);
/* auth_keys_init() with the PEM read from a file (path may be NULL). */
int auth_keys_load(struct auth_keys *k, const char *secret, const char *pem_path, int leeway,
                   char *err, size_t errlen);
void auth_keys_free(struct auth_keys *k);
/* True when at least one key is configured. */
bool auth_keys_any(const struct auth_keys *k);

/* What a verified token grants. Created by auth_verify(), owned by whoever
 * holds it, released with auth_claims_free(). */
struct auth_claims {
    char *user;                   /* "sub"; NULL for a subscription token without one */
    char *ch;                     /* "ch" (subscription tokens); NULL otherwise */
    json_t *info;                 /* "info", any JSON value, or NULL */
    char **channels;              /* "channels" patterns ("chat:*", "user:42") */
    uint32_t n_channels;
    int64_t exp;                  /* seconds since the Unix epoch */
};

enum auth_result {
    AUTH_OK,
    AUTH_NO_KEYS,                 /* no key is configured: no token can be valid */
    AUTH_MALFORMED,               /* not three base64url parts, bad JSON, too long */
    AUTH_BAD_ALG,                 /* alg none, unknown, or one no configured key checks */
    AUTH_BAD_SIGNATURE,
    AUTH_EXPIRED,
    AUTH_NOT_YET_VALID,
    AUTH_MISSING_CLAIM,           /* no exp, no sub (connection) / ch (subscription), wrong type */
    AUTH_WRONG_USE,               /* a subscription token (it has ch) offered as a connection token */
    AUTH_BAD_USER,                /* a sub containing '/', which would name a personal sub-channel */
};

/* What kind of token is expected. */
enum auth_use {
    AUTH_USE_CONNECTION,          /* needs sub and exp, must not have ch */
    AUTH_USE_SUBSCRIPTION,        /* needs ch and exp */
};

/* Verifies token (len bytes, need not be NUL-terminated) at time now_s and
 * fills *out on AUTH_OK. */
enum auth_result auth_verify(const struct auth_keys *k, const char *token, size_t len,
                             enum auth_use use, int64_t now_s, struct auth_claims *out);
void auth_claims_free(struct auth_claims *c);
/* The reason text sent with close code 4001 or err forbidden ("token expired"). */
const char *auth_result_str(enum auth_result r);

/* a (alen bytes) == the NUL-terminated secret b, in time that depends only
 * on alen: response timing does not reveal the API key or admin secret. */
bool auth_secret_equal(const char *a, size_t alen, const char *b);

/* A "channels" pattern: an exact channel name, or a prefix ending in '*'
 * ("chat:*" matches every channel of namespace chat; "*" matches all). */
bool auth_pattern_match(const char *pattern, const char *ch, size_t len);

/* Namespace rules (config.h). `who` is the connection's claims, NULL when it
 * is anonymous. On refusal they return false and say why in why[]. */

/* Personal channels: "<ns>:<id>" and "<ns>:<id>/..." belong to user <id>,
 * the text after the first ':' up to the first '/', compared whole. */
bool auth_personal_allows(const struct ns_opts *ns, const struct auth_claims *who,
                          const char *ch, size_t len, char *why, size_t whylen);
/* May `who` subscribe to ch, or read its history or presence? `sub_token` is
 * the verified subscription token given with the request, if any (only the
 * "token" rule looks at it; it must name ch and the same user). */
bool auth_may_subscribe(const struct ns_opts *ns, const struct auth_claims *who,
                        const char *ch, size_t len, const struct auth_claims *sub_token,
                        char *why, size_t whylen);
/* May `who` publish on ch from a WebSocket? member: it is subscribed to ch. */
bool auth_may_publish(const struct ns_opts *ns, const struct auth_claims *who, const char *ch,
                      size_t len, bool member, char *why, size_t whylen);

#endif
