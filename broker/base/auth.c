/* auth.c - JWT verification (through libjwt) and the namespace rules.
 *
 * Invariant: a token reaches jwt_decode() only with the one key that its
 * header's algorithm calls for, and the algorithm libjwt then reports must be
 * that same one; anything else is refused before or after (see auth.h). */
#include "auth.h"
#include "codec.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------- keys */

bool auth_keys_any(const struct auth_keys *k) { return k->secret || k->pem; }

void auth_keys_free(struct auth_keys *k)
{
    if (k->secret)
        memset(k->secret, 0, k->secret_len);
    free(k->secret);
    free(k->pem);
    memset(k, 0, sizeof *k);
}

/* The algorithm a PEM public key can check: RS256 for RSA, ES256 for P-256. */
static int pem_algorithm(const char *pem, size_t len, char *err, size_t errlen)
{
    int alg = -1;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    if (!pkey) {
        snprintf(err, errlen, "jwt-public-key: not a PEM public key (expected -----BEGIN PUBLIC KEY-----)");
        goto out;
    }
    switch (EVP_PKEY_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_bits(pkey) < 2048)
            snprintf(err, errlen, "jwt-public-key: RSA key of %d bits; at least 2048 are required",
                     EVP_PKEY_bits(pkey));
        else
            alg = JWT_ALG_RS256;
        break;
    case EVP_PKEY_EC: {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof group, &glen) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0))
            snprintf(err, errlen, "jwt-public-key: EC key on curve '%s'; ES256 needs P-256 (prime256v1)",
                     group);
        else
            alg = JWT_ALG_ES256;
        break;
    }
    default:
        snprintf(err, errlen, "jwt-public-key: the key is neither RSA (RS256) nor EC P-256 (ES256)");
        break;
    }
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return alg;
}

int auth_keys_init(struct auth_keys *k, const char *secret, const char *pem, size_t pem_len,
                   int leeway, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    k->leeway = leeway;
    if (secret && *secret) {
        k->secret_len = strlen(secret);
        if (k->secret_len < 16) {
            snprintf(err, errlen, "jwt-secret must be at least 16 bytes (HS256 keys should be 32)");
            goto fail;
        }
        k->secret = (unsigned char *)strdup(secret);
        if (!k->secret)
            goto oom;
    }
    if (pem && pem_len) {
        k->pem_alg = pem_algorithm(pem, pem_len, err, errlen);
        if (k->pem_alg < 0)
            goto fail;
        k->pem = malloc(pem_len);
        if (!k->pem)
            goto oom;
        memcpy(k->pem, pem, pem_len);
        k->pem_len = pem_len;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    auth_keys_free(k);
    return -1;
}

int auth_keys_load(struct auth_keys *k, const char *secret, const char *pem_path, int leeway,
                   char *err, size_t errlen)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = -1;
    if (pem_path && *pem_path) {
        FILE *f = fopen(pem_path, "rb");
        if (!f) {
            snprintf(err, errlen, "jwt-public-key %s: %s", pem_path, strerror(errno));
            return -1;
        }
        pem = malloc(65536);
        if (pem)
            len = fread(pem, 1, 65536, f);
        fclose(f);
        if (!pem || len == 0 || len == 65536) {
            snprintf(err, errlen, "jwt-public-key %s: empty, unreadable or over 64 KiB", pem_path);
            goto out;
        }
    }
    char why[200] = "";
    rc = auth_keys_init(k, secret, pem, len, leeway, why, sizeof why);
    if (rc < 0 && !strncmp(why, "jwt-public-key: ", 16))
        snprintf(err, errlen, "jwt-public-key %s: %s", pem_path, why + 16);
    else if (rc < 0)
        snprintf(err, errlen, "%s", why);
out:
    free(pem);
    return rc;
}

/* ---------------------------------------------------------------- parsing */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decodes unpadded base64url into out (room for len * 3 / 4 bytes); returns
 * the decoded length or -1. */
static long b64url_decode(const char *in, size_t len, unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long n = 0;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

/* The JSON object encoded in one base64url part of a token, or NULL. */
static json_t *part_json(const char *p, size_t len)
{
    unsigned char buf[AUTH_TOKEN_MAX];
    long n = b64url_decode(p, len, buf);
    if (n <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static char *string_claim(json_t *grants, const char *name, size_t max)
{
    json_t *v = json_object_get(grants, name);
    if (!json_is_string(v))
        return NULL;
    size_t len = json_string_length(v);
    if (len == 0 || len > max || memchr(json_string_value(v), '\0', len))
        return NULL;
    return strdup(json_string_value(v));
}

static enum auth_result read_claims(json_t *g, enum auth_use use, int64_t now_s, int leeway,
                                    struct auth_claims *out)
{
    json_t *exp = json_object_get(g, "exp");
    json_t *nbf = json_object_get(g, "nbf");
    json_t *sub = json_object_get(g, "sub");
    json_t *info = json_object_get(g, "info");
    json_t *chans = json_object_get(g, "channels");

    if (!json_is_number(exp) || (nbf && !json_is_number(nbf)))
        return AUTH_MISSING_CLAIM;
    if ((double)now_s >= json_number_value(exp) + leeway)
        return AUTH_EXPIRED;
    if (nbf && (double)now_s + leeway < json_number_value(nbf))
        return AUTH_NOT_YET_VALID;
    /* Both kinds are signed with the same keys, so only the claims tell them
     * apart: a subscription token (for one channel) must never open a
     * connection that the namespace rules would then trust. */
    if (use == AUTH_USE_CONNECTION && json_object_get(g, "ch"))
        return AUTH_WRONG_USE;
    if (sub) {
        out->user = string_claim(g, "sub", AUTH_USER_MAX);
        if (!out->user)
            return AUTH_MISSING_CLAIM;
        /* '/' separates a personal channel's owner from its sub-channels
         * ("user:42/inbox"): a user "42/inbox" would be ambiguous. */
        if (strchr(out->user, '/'))
            return AUTH_BAD_USER;
    } else if (use == AUTH_USE_CONNECTION) {
        return AUTH_MISSING_CLAIM;
    }
    if (use == AUTH_USE_SUBSCRIPTION) {
        out->ch = string_claim(g, "ch", CODEC_CHANNEL_MAX);
        if (!out->ch || !codec_channel_valid(out->ch, strlen(out->ch)))
            return AUTH_MISSING_CLAIM;
    }
    if (chans) {
        if (!json_is_array(chans))
            return AUTH_MISSING_CLAIM;
        out->channels = calloc(json_array_size(chans) + 1, sizeof *out->channels);
        if (!out->channels)
            return AUTH_MALFORMED;
        size_t i;
        json_t *p;
        json_array_foreach(chans, i, p) {
            if (!json_is_string(p) || json_string_length(p) == 0 ||
                json_string_length(p) > CODEC_CHANNEL_MAX + 1)
                return AUTH_MISSING_CLAIM;
            out->channels[out->n_channels] = strdup(json_string_value(p));
            if (!out->channels[out->n_channels])
                return AUTH_MALFORMED;
            out->n_channels++;
        }
    }
    if (info)
        out->info = json_incref(info);
    double e = json_number_value(exp);
    out->exp = e > 4e12 ? (int64_t)4e12 : (int64_t)e;
    return AUTH_OK;
}

void auth_claims_free(struct auth_claims *c)
{
    if (!c)
        return;
    free(c->user);
    free(c->ch);
    json_decref(c->info);
    for (uint32_t i = 0; i < c->n_channels; i++)
        free(c->channels[i]);
    free(c->channels);
    memset(c, 0, sizeof *c);
}

enum auth_result auth_verify(const struct auth_keys *k, const char *token, size_t len,
                             enum auth_use use, int64_t now_s, struct auth_claims *out)
{
    enum auth_result r = AUTH_MALFORMED;
    char *text = NULL;
    json_t *head = NULL, *body = NULL, *grants = NULL;
    jwt_t *jwt = NULL;

    memset(out, 0, sizeof *out);
    if (!auth_keys_any(k))
        return AUTH_NO_KEYS;
    if (!token || len == 0 || len > AUTH_TOKEN_MAX || memchr(token, '\0', len))
        return AUTH_MALFORMED;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return AUTH_MALFORMED;

    /* The header picks the key, so it is read before libjwt sees the token. */
    head = part_json(token, (size_t)(dot1 - token));
    body = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!head || !body)
        goto out;
    json_t *alg_v = json_object_get(head, "alg");
    if (!json_is_string(alg_v)) {
        r = AUTH_BAD_ALG;
        goto out;
    }
    const char *alg = json_string_value(alg_v);
    const unsigned char *key = NULL;
    size_t key_len = 0;
    int want;
    if (!strcmp(alg, "HS256") && k->secret) {
        want = JWT_ALG_HS256;
        key = k->secret;
        key_len = k->secret_len;
    } else if (k->pem && !strcmp(alg, jwt_alg_str((jwt_alg_t)k->pem_alg))) {
        want = k->pem_alg;
        key = k->pem;
        key_len = k->pem_len;
    } else {
        r = AUTH_BAD_ALG;          /* none, HS384, RS256 without a key, ... */
        goto out;
    }
    if (dot2 + 1 == token + len) {
        r = AUTH_BAD_SIGNATURE;    /* a signed algorithm with no signature */
        goto out;
    }

    text = strndup(token, len);
    if (!text)
        goto out;
    if (jwt_decode(&jwt, text, key, (int)key_len) != 0 || !jwt) {
        r = AUTH_BAD_SIGNATURE;
        goto out;
    }
    if ((int)jwt_get_alg(jwt) != want) {
        r = AUTH_BAD_ALG;
        goto out;
    }
    /* Claims as libjwt read them from the verified payload. */
    char *gtext = jwt_get_grants_json(jwt, NULL);
    grants = gtext ? json_loads(gtext, 0, NULL) : NULL;
    free(gtext);
    if (!json_is_object(grants))
        goto out;
    r = read_claims(grants, use, now_s, k->leeway, out);

out:
    if (r != AUTH_OK)
        auth_claims_free(out);
    jwt_free(jwt);
    free(text);
    json_decref(head);
    json_decref(body);
    json_decref(grants);
    return r;
}

const char *auth_result_str(enum auth_result r)
{
    switch (r) {
    case AUTH_OK: return "ok";
    case AUTH_NO_KEYS: return "tokens are not accepted by this node";
    case AUTH_MALFORMED: return "malformed token";
    case AUTH_BAD_ALG: return "token algorithm not accepted";
    case AUTH_BAD_SIGNATURE: return "bad token signature";
    case AUTH_EXPIRED: return "token expired";
    case AUTH_NOT_YET_VALID: return "token not yet valid";
    case AUTH_MISSING_CLAIM: return "token claims missing or invalid";
    case AUTH_WRONG_USE: return "a subscription token (with ch) is not a connection token";
    case AUTH_BAD_USER: return "token sub must not contain '/'";
    }
    return "invalid token";
}

/* ------------------------------------------------------------------ rules */

bool auth_pattern_match(const char *pattern, const char *ch, size_t len)
{
    size_t plen = strlen(pattern);
    if (plen && pattern[plen - 1] == '*')
        return len >= plen - 1 && !memcmp(pattern, ch, plen - 1);
    return plen == len && !memcmp(pattern, ch, len);
}

bool auth_personal_allows(const struct ns_opts *ns, const struct auth_claims *who,
                          const char *ch, size_t len, char *why, size_t whylen)
{
    if (!ns->personal)
        return true;
    const char *colon = memchr(ch, ':', len);
    if (!colon)
        return true;
    /* The owner is the id up to the first '/', compared whole: a user whose
     * id itself contains '/' owns nothing here. */
    const char *id = colon + 1;
    const char *end = ch + len;
    const char *slash = memchr(id, '/', (size_t)(end - id));
    size_t idlen = (size_t)((slash ? slash : end) - id);
    if (who && who->user && strlen(who->user) == idlen && !memcmp(id, who->user, idlen))
        return true;
    snprintf(why, whylen, "'%.*s' is a personal channel of another user", (int)len, ch);
    return false;
}

bool auth_may_subscribe(const struct ns_opts *ns, const struct auth_claims *who,
                        const char *ch, size_t len, const struct auth_claims *sub_token,
                        char *why, size_t whylen)
{
    if (!auth_personal_allows(ns, who, ch, len, why, whylen))
        return false;
    switch (ns->subscribe) {
    case NS_SUB_ANYONE:
        return true;
    case NS_SUB_AUTHENTICATED:
        if (who)
            return true;
        snprintf(why, whylen, "namespace '%s' is open to authenticated connections only", ns->name);
        return false;
    case NS_SUB_CLAIM:
        for (uint32_t i = 0; who && i < who->n_channels; i++)
            if (auth_pattern_match(who->channels[i], ch, len))
                return true;
        snprintf(why, whylen, "the connection token's channels claim does not grant '%.*s'",
                 (int)len, ch);
        return false;
    case NS_SUB_TOKEN:
        if (!sub_token) {
            snprintf(why, whylen, "'%.*s' needs a subscription token (\"token\" in the request)",
                     (int)len, ch);
            return false;
        }
        if (!sub_token->ch || strlen(sub_token->ch) != len || memcmp(sub_token->ch, ch, len)) {
            snprintf(why, whylen, "the subscription token is for another channel");
            return false;
        }
        if (sub_token->user && !(who && who->user && !strcmp(who->user, sub_token->user))) {
            snprintf(why, whylen, "the subscription token is for another user");
            return false;
        }
        return true;
    }
    return false;
}

bool auth_may_publish(const struct ns_opts *ns, const struct auth_claims *who, const char *ch,
                      size_t len, bool member, char *why, size_t whylen)
{
    if (!auth_personal_allows(ns, who, ch, len, why, whylen))
        return false;
    switch (ns->publish) {
    case NS_PUB_ANYONE:
        return true;
    case NS_PUB_AUTHENTICATED:
        if (who)
            return true;
        snprintf(why, whylen, "publishing in namespace '%s' needs an authenticated connection",
                 ns->name);
        return false;
    case NS_PUB_MEMBERS:
        if (member)
            return true;
        snprintf(why, whylen, "publishing on '%.*s' is for its subscribers only", (int)len, ch);
        return false;
    case NS_PUB_NOBODY:
        break;
    }
    snprintf(why, whylen, "publishing from clients is disabled in namespace '%s'", ns->name);
    return false;
}

bool auth_secret_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i % (blen ? blen : 1)];
    return diff == 0;
}
