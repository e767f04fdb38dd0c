/* test_auth.c - token verification (broker/base/auth.c) as a table: every kind of
 * token a client can present, with the one outcome each must have; then the
 * namespace rules (who may subscribe, publish, use a personal channel) and
 * the rate-limit bucket (broker/base/ratelimit.c).
 *
 * Tokens are made here with libjwt and keys generated at start-up with
 * OpenSSL (RSA 2048 and P-256), so nothing is read from disk. Malformed and
 * hostile tokens are written by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "ratelimit.h"

#define NOW 1800000000LL
#define SECRET "an-hs256-secret-of-32-bytes-long"

/* --------------------------------------------------------------- keys */

struct pem_pair {
    char *priv, *pub;
    size_t priv_len, pub_len;
};

static struct pem_pair rsa, rsa_other, ec;

static char *bio_text(BIO *b, size_t *len)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return out;
}

static void make_pair(struct pem_pair *pp, EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    pp->priv = bio_text(b, &pp->priv_len);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    pp->pub = bio_text(b, &pp->pub_len);
    BIO_free(b);
    EVP_PKEY_free(k);
}

static int group_setup(void **state)
{
    (void)state;
    make_pair(&rsa, EVP_RSA_gen(2048));
    make_pair(&rsa_other, EVP_RSA_gen(2048));
    make_pair(&ec, EVP_EC_gen("P-256"));
    return rsa.pub && rsa_other.pub && ec.pub ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    struct pem_pair *all[] = {&rsa, &rsa_other, &ec};
    for (int i = 0; i < 3; i++) {
        free(all[i]->priv);
        free(all[i]->pub);
    }
    return 0;
}

/* ------------------------------------------------------------- tokens */

/* A token signed with libjwt: alg and key as given, claims a JSON object. */
static char *sign(jwt_alg_t alg, const char *key, size_t key_len, const char *claims)
{
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_add_grants_json(j, claims), 0);
    assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)key_len), 0);
    char *t = jwt_encode_str(j);
    jwt_free(j);
    assert_non_null(t);
    return t;
}

static void b64url(const char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16 | (uint32_t)(unsigned char)in[i + 1] << 8 |
                     (unsigned char)in[i + 2];
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63], out[o++] = a[(v >> 6) & 63], out[o++] = a[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16 |
                     (i + 1 < n ? (uint32_t)(unsigned char)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* header.payload.sig from plain text parts (sig used as is). */
static char *raw(const char *header, const char *payload, const char *sig)
{
    char h[1024], p[1024];
    b64url(header, strlen(header), h);
    b64url(payload, strlen(payload), p);
    char *t = malloc(strlen(h) + strlen(p) + strlen(sig) + 3);
    sprintf(t, "%s.%s.%s", h, p, sig);
    return t;
}

#define CLAIMS_OK "{\"sub\":\"42\",\"exp\":1800000600,\"info\":{\"name\":\"Ann\"},\"channels\":[\"chat:*\",\"user:42\"]}"

enum keyset { KEYS_SECRET_AND_RSA, KEYS_RSA_ONLY, KEYS_EC_ONLY, KEYS_NONE };

struct token_case {
    const char *name;
    enum keyset keys;
    enum auth_use use;
    char *(*make)(void);
    enum auth_result expect;
};

static char *t_hs256_valid(void) { return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), CLAIMS_OK); }
static char *t_rs256_valid(void) { return sign(JWT_ALG_RS256, rsa.priv, rsa.priv_len, CLAIMS_OK); }
static char *t_es256_valid(void) { return sign(JWT_ALG_ES256, ec.priv, ec.priv_len, CLAIMS_OK); }
static char *t_expired(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1799999000}");
}
static char *t_expired_within_leeway(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1799999998}");
}
static char *t_expires_now(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1799999995}");
}
static char *t_not_yet_valid(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1800009000,\"nbf\":1800003600}");
}
static char *t_nbf_within_leeway(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1800009000,\"nbf\":1800000003}");
}
static char *t_other_secret(void)
{
    return sign(JWT_ALG_HS256, "another-secret-of-32-bytes-long!", 32, CLAIMS_OK);
}
static char *t_rs256_other_key(void) { return sign(JWT_ALG_RS256, rsa_other.priv, rsa_other.priv_len, CLAIMS_OK); }
static char *t_tampered_payload(void)
{
    char *good = t_hs256_valid();
    char *admin = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"admin\",\"exp\":1800000600}");
    /* admin's header and payload with good's signature */
    char *sig = strrchr(good, '.');
    char *dot = strrchr(admin, '.');
    char *t = malloc((size_t)(dot - admin) + strlen(sig) + 1);
    memcpy(t, admin, (size_t)(dot - admin));
    strcpy(t + (dot - admin), sig);
    free(good);
    free(admin);
    return t;
}
static char *t_hs512(void) { return sign(JWT_ALG_HS512, SECRET, strlen(SECRET), CLAIMS_OK); }
static char *t_rs384(void) { return sign(JWT_ALG_RS384, rsa.priv, rsa.priv_len, CLAIMS_OK); }
static char *t_hs256_with_public_key_as_secret(void)
{
    return sign(JWT_ALG_HS256, rsa.pub, rsa.pub_len, CLAIMS_OK);
}
static char *t_es256_to_rsa_server(void) { return t_es256_valid(); }
static char *t_hs256_to_rsa_server(void) { return t_hs256_valid(); }
static char *t_alg_none(void)
{
    jwt_t *j = NULL;
    jwt_new(&j);
    jwt_add_grants_json(j, CLAIMS_OK);
    char *t = jwt_encode_str(j); /* alg none, empty signature */
    jwt_free(j);
    return t;
}
static char *t_alg_none_with_signature(void) { return raw("{\"alg\":\"none\"}", CLAIMS_OK, "c2ln"); }
static char *t_alg_none_uppercase(void) { return raw("{\"alg\":\"NONE\",\"typ\":\"JWT\"}", CLAIMS_OK, ""); }
static char *t_no_alg(void) { return raw("{\"typ\":\"JWT\"}", CLAIMS_OK, "c2ln"); }
static char *t_hs256_empty_signature(void) { return raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", CLAIMS_OK, ""); }
static char *t_missing_sub(void) { return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"exp\":1800000600}"); }
static char *t_missing_exp(void) { return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\"}"); }
static char *t_sub_not_a_string(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":42,\"exp\":1800000600}");
}
static char *t_empty_sub(void) { return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"\",\"exp\":1800000600}"); }
static char *t_exp_not_a_number(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":\"tomorrow\"}");
}
static char *t_channels_not_a_list(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1800000600,\"channels\":\"chat:*\"}");
}
static char *t_garbage_word(void) { return strdup("hello"); }
static char *t_garbage_empty(void) { return strdup(""); }
static char *t_garbage_dots(void) { return strdup("a.b.c"); }
static char *t_garbage_four_parts(void)
{
    char *good = t_hs256_valid();
    char *t = malloc(strlen(good) + 6);
    sprintf(t, "%s.abcd", good);
    free(good);
    return t;
}
static char *t_garbage_header_not_json(void) { return raw("not json", CLAIMS_OK, "c2ln"); }
static char *t_garbage_payload_not_object(void) { return raw("{\"alg\":\"HS256\"}", "[1,2]", "c2ln"); }
static char *t_garbage_bad_base64(void) { return strdup("eyJhbGciOiJIUzI1NiJ9.!!!.c2ln"); }
static char *t_garbage_huge(void)
{
    char *t = malloc(AUTH_TOKEN_MAX + 100);
    memset(t, 'A', AUTH_TOKEN_MAX + 99);
    t[10] = '.';
    t[20] = '.';
    t[AUTH_TOKEN_MAX + 99] = '\0';
    return t;
}
static char *t_subscription_valid(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"ch\":\"vip:room\",\"exp\":1800000600}");
}
static char *t_subscription_no_ch(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"exp\":1800000600}");
}
static char *t_subscription_bad_ch(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"ch\":\"no spaces\",\"exp\":1800000600}");
}

static char *t_subscription_with_sub(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42\",\"ch\":\"vip:room\",\"exp\":1800000600}");
}
static char *t_sub_with_slash(void)
{
    return sign(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"42/inbox\",\"exp\":1800000600}");
}

static const struct token_case cases[] = {
    {"a valid HS256 token", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_hs256_valid, AUTH_OK},
    {"a valid RS256 token", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_rs256_valid, AUTH_OK},
    {"a valid ES256 token", KEYS_EC_ONLY, AUTH_USE_CONNECTION, t_es256_valid, AUTH_OK},
    {"an expired token", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_expired, AUTH_EXPIRED},
    {"a token expired less than the leeway ago", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_expired_within_leeway, AUTH_OK},
    {"a token whose exp plus leeway is now", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_expires_now,
     AUTH_EXPIRED},
    {"a token not valid before an hour from now", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_not_yet_valid, AUTH_NOT_YET_VALID},
    {"a token whose nbf is within the leeway", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_nbf_within_leeway, AUTH_OK},
    {"an HS256 token signed with another secret", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_other_secret, AUTH_BAD_SIGNATURE},
    {"an RS256 token signed with another key", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_rs256_other_key, AUTH_BAD_SIGNATURE},
    {"a payload with another token's signature", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_tampered_payload, AUTH_BAD_SIGNATURE},
    {"an HS256 header with an empty signature", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_hs256_empty_signature, AUTH_BAD_SIGNATURE},
    {"an HS512 token (algorithm not accepted)", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_hs512,
     AUTH_BAD_ALG},
    {"an RS384 token (algorithm not accepted)", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_rs384,
     AUTH_BAD_ALG},
    {"an HS256 token keyed with the server's RSA public key", KEYS_RSA_ONLY, AUTH_USE_CONNECTION,
     t_hs256_with_public_key_as_secret, AUTH_BAD_ALG},
    {"an HS256 token to a server with only a public key", KEYS_RSA_ONLY, AUTH_USE_CONNECTION,
     t_hs256_to_rsa_server, AUTH_BAD_ALG},
    {"an ES256 token to a server with an RSA key", KEYS_RSA_ONLY, AUTH_USE_CONNECTION,
     t_es256_to_rsa_server, AUTH_BAD_ALG},
    {"an alg none token", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_alg_none, AUTH_BAD_ALG},
    {"an alg none token with a signature", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_alg_none_with_signature, AUTH_BAD_ALG},
    {"an alg NONE token", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_alg_none_uppercase, AUTH_BAD_ALG},
    {"a header without alg", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_no_alg, AUTH_BAD_ALG},
    {"a token without sub", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_missing_sub, AUTH_MISSING_CLAIM},
    {"a token without exp", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_missing_exp, AUTH_MISSING_CLAIM},
    {"a token whose sub is a number", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_sub_not_a_string,
     AUTH_MISSING_CLAIM},
    {"a token whose sub is empty", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_empty_sub, AUTH_MISSING_CLAIM},
    {"a token whose exp is a string", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_exp_not_a_number,
     AUTH_MISSING_CLAIM},
    {"a token whose channels claim is not a list", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_channels_not_a_list, AUTH_MISSING_CLAIM},
    {"a word", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_word, AUTH_MALFORMED},
    {"an empty string", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_empty, AUTH_MALFORMED},
    {"a.b.c", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_dots, AUTH_MALFORMED},
    {"four parts", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_four_parts, AUTH_MALFORMED},
    {"a header that is not JSON", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_header_not_json,
     AUTH_MALFORMED},
    {"a payload that is not an object", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_garbage_payload_not_object, AUTH_MALFORMED},
    {"a payload that is not base64url", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_bad_base64,
     AUTH_MALFORMED},
    {"a token over the size limit", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION, t_garbage_huge, AUTH_MALFORMED},
    {"any token when no key is configured", KEYS_NONE, AUTH_USE_CONNECTION, t_hs256_valid, AUTH_NO_KEYS},
    {"a subscription token with ch and no sub", KEYS_SECRET_AND_RSA, AUTH_USE_SUBSCRIPTION,
     t_subscription_valid, AUTH_OK},
    {"a subscription token without ch", KEYS_SECRET_AND_RSA, AUTH_USE_SUBSCRIPTION, t_subscription_no_ch,
     AUTH_MISSING_CLAIM},
    {"a subscription token whose ch is no channel name", KEYS_SECRET_AND_RSA, AUTH_USE_SUBSCRIPTION,
     t_subscription_bad_ch, AUTH_MISSING_CLAIM},
    {"a subscription token without sub used as a connection token", KEYS_SECRET_AND_RSA,
     AUTH_USE_CONNECTION, t_subscription_valid, AUTH_WRONG_USE},
    {"a subscription token with sub used as a connection token", KEYS_SECRET_AND_RSA,
     AUTH_USE_CONNECTION, t_subscription_with_sub, AUTH_WRONG_USE},
    {"a subscription token with sub used as one", KEYS_SECRET_AND_RSA, AUTH_USE_SUBSCRIPTION,
     t_subscription_with_sub, AUTH_OK},
    {"a connection token whose sub contains '/'", KEYS_SECRET_AND_RSA, AUTH_USE_CONNECTION,
     t_sub_with_slash, AUTH_BAD_USER},
};

static void load_keys(struct auth_keys *k, enum keyset which)
{
    char err[200] = "";
    int rc = 0;
    switch (which) {
    case KEYS_SECRET_AND_RSA: rc = auth_keys_init(k, SECRET, rsa.pub, rsa.pub_len, 5, err, sizeof err); break;
    case KEYS_RSA_ONLY: rc = auth_keys_init(k, NULL, rsa.pub, rsa.pub_len, 5, err, sizeof err); break;
    case KEYS_EC_ONLY: rc = auth_keys_init(k, NULL, ec.pub, ec.pub_len, 5, err, sizeof err); break;
    case KEYS_NONE: rc = auth_keys_init(k, NULL, NULL, 0, 5, err, sizeof err); break;
    }
    if (rc != 0)
        fail_msg("keys: %s", err);
}

static void test_every_kind_of_token_gets_its_one_outcome(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct auth_keys k;
        struct auth_claims c;
        load_keys(&k, cases[i].keys);
        char *t = cases[i].make();
        enum auth_result r = auth_verify(&k, t, strlen(t), cases[i].use, NOW, &c);
        if (r != cases[i].expect) {
            print_error("%s: got %s, expected %s\n", cases[i].name, auth_result_str(r),
                        auth_result_str(cases[i].expect));
            failures++;
        }
        if (r != AUTH_OK)
            assert_null(c.user); /* nothing is left behind on refusal */
        auth_claims_free(&c);
        free(t);
        auth_keys_free(&k);
    }
    assert_int_equal(failures, 0);
}

static void test_a_valid_token_yields_sub_info_channels_and_exp(void **state)
{
    (void)state;
    struct auth_keys k;
    struct auth_claims c;
    load_keys(&k, KEYS_SECRET_AND_RSA);
    char *t = t_rs256_valid();
    assert_int_equal(auth_verify(&k, t, strlen(t), AUTH_USE_CONNECTION, NOW, &c), AUTH_OK);
    assert_string_equal(c.user, "42");
    assert_int_equal(c.exp, 1800000600LL);
    assert_string_equal(json_string_value(json_object_get(c.info, "name")), "Ann");
    assert_int_equal(c.n_channels, 2);
    assert_string_equal(c.channels[0], "chat:*");
    assert_string_equal(c.channels[1], "user:42");
    assert_null(c.ch);
    auth_claims_free(&c);
    free(t);
    auth_keys_free(&k);
}

static void test_a_token_need_not_be_nul_terminated(void **state)
{
    (void)state;
    struct auth_keys k;
    struct auth_claims c;
    load_keys(&k, KEYS_SECRET_AND_RSA);
    char *t = t_hs256_valid();
    size_t n = strlen(t);
    char *padded = malloc(n + 8);
    memcpy(padded, t, n);
    memcpy(padded + n, "XXXXXXXX", 8);
    assert_int_equal(auth_verify(&k, padded, n, AUTH_USE_CONNECTION, NOW, &c), AUTH_OK);
    auth_claims_free(&c);
    /* A NUL inside the given length is refused. */
    padded[5] = '\0';
    assert_int_equal(auth_verify(&k, padded, n, AUTH_USE_CONNECTION, NOW, &c), AUTH_MALFORMED);
    free(padded);
    free(t);
    auth_keys_free(&k);
}

static void test_keys_that_cannot_check_es256_or_rs256_are_refused_at_load(void **state)
{
    (void)state;
    struct auth_keys k;
    char err[200];
    assert_int_equal(auth_keys_init(&k, NULL, "not a pem", 9, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "PEM"));
    /* A private key is not a public key. */
    assert_int_equal(auth_keys_init(&k, NULL, rsa.priv, rsa.priv_len, 0, err, sizeof err), -1);
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    struct pem_pair pp;
    make_pair(&pp, p384);
    assert_int_equal(auth_keys_init(&k, NULL, pp.pub, pp.pub_len, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "P-256"));
    free(pp.priv);
    free(pp.pub);
    assert_int_equal(auth_keys_init(&k, "short", NULL, 0, 0, err, sizeof err), -1);
    assert_int_equal(auth_keys_init(&k, SECRET, ec.pub, ec.pub_len, 0, err, sizeof err), 0);
    assert_true(auth_keys_any(&k));
    auth_keys_free(&k);
}

/* ------------------------------------------------------------- rules */

static struct ns_opts ns(const char *name, enum ns_subscribe s, enum ns_publish p, bool personal)
{
    struct ns_opts o;
    memset(&o, 0, sizeof o);
    snprintf(o.name, sizeof o.name, "%s", name);
    o.subscribe = s;
    o.publish = p;
    o.personal = personal;
    return o;
}

static void test_channel_patterns_match_exactly_or_by_prefix_star(void **state)
{
    (void)state;
    assert_true(auth_pattern_match("chat:*", "chat:lobby", 10));
    assert_true(auth_pattern_match("chat:*", "chat:", 5));
    assert_false(auth_pattern_match("chat:*", "chat", 4));
    assert_false(auth_pattern_match("chat:*", "chatter:x", 9));
    assert_true(auth_pattern_match("user:42", "user:42", 7));
    assert_false(auth_pattern_match("user:42", "user:420", 8));
    assert_false(auth_pattern_match("user:42", "user:4", 6));
    assert_true(auth_pattern_match("*", "anything:at/all", 15));
}

static void test_each_subscribe_rule_admits_one_and_refuses_another(void **state)
{
    (void)state;
    char why[200];
    char *chans[] = {"vip:*"};
    struct auth_claims user = {.user = "42", .channels = chans, .n_channels = 1};
    struct auth_claims plain = {.user = "7"};
    struct auth_claims tok = {.ch = "secret:room"};
    struct auth_claims tok_other_ch = {.ch = "secret:other"};
    struct auth_claims tok_for_42 = {.ch = "secret:room", .user = "42"};

    struct ns_opts o = ns("pub", NS_SUB_ANYONE, NS_PUB_ANYONE, false);
    assert_true(auth_may_subscribe(&o, NULL, "pub:x", 5, NULL, why, sizeof why));

    o = ns("auth", NS_SUB_AUTHENTICATED, NS_PUB_ANYONE, false);
    assert_true(auth_may_subscribe(&o, &plain, "auth:x", 6, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, NULL, "auth:x", 6, NULL, why, sizeof why));
    assert_non_null(strstr(why, "authenticated"));

    o = ns("vip", NS_SUB_CLAIM, NS_PUB_ANYONE, false);
    assert_true(auth_may_subscribe(&o, &user, "vip:lounge", 10, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &plain, "vip:lounge", 10, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, NULL, "vip:lounge", 10, NULL, why, sizeof why));

    o = ns("secret", NS_SUB_TOKEN, NS_PUB_ANYONE, false);
    assert_true(auth_may_subscribe(&o, NULL, "secret:room", 11, &tok, why, sizeof why));
    assert_true(auth_may_subscribe(&o, &user, "secret:room", 11, &tok_for_42, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &user, "secret:room", 11, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &user, "secret:room", 11, &tok_other_ch, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &plain, "secret:room", 11, &tok_for_42, why, sizeof why));
    assert_non_null(strstr(why, "another user"));
    assert_false(auth_may_subscribe(&o, NULL, "secret:room", 11, &tok_for_42, why, sizeof why));
}

static void test_each_publish_rule_admits_one_and_refuses_another(void **state)
{
    (void)state;
    char why[200];
    struct auth_claims user = {.user = "42"};
    struct ns_opts o = ns("a", NS_SUB_ANYONE, NS_PUB_ANYONE, false);
    assert_true(auth_may_publish(&o, NULL, "a:x", 3, false, why, sizeof why));

    o = ns("b", NS_SUB_ANYONE, NS_PUB_AUTHENTICATED, false);
    assert_true(auth_may_publish(&o, &user, "b:x", 3, false, why, sizeof why));
    assert_false(auth_may_publish(&o, NULL, "b:x", 3, true, why, sizeof why));

    o = ns("c", NS_SUB_ANYONE, NS_PUB_MEMBERS, false);
    assert_true(auth_may_publish(&o, NULL, "c:x", 3, true, why, sizeof why));
    assert_false(auth_may_publish(&o, &user, "c:x", 3, false, why, sizeof why));

    o = ns("ticker", NS_SUB_ANYONE, NS_PUB_NOBODY, false);
    assert_false(auth_may_publish(&o, &user, "ticker:x", 8, true, why, sizeof why));
    assert_string_equal(why, "publishing from clients is disabled in namespace 'ticker'");
}

static void test_a_personal_channel_is_open_only_to_its_user(void **state)
{
    (void)state;
    char why[200];
    struct auth_claims u42 = {.user = "42"}, u4 = {.user = "4"}, u420 = {.user = "420"},
                       u42inbox = {.user = "42/inbox"};
    struct ns_opts o = ns("user", NS_SUB_ANYONE, NS_PUB_ANYONE, true);
    assert_true(auth_may_subscribe(&o, &u42, "user:42", 7, NULL, why, sizeof why));
    assert_true(auth_may_subscribe(&o, &u42, "user:42/inbox", 13, NULL, why, sizeof why));
    assert_true(auth_may_publish(&o, &u42, "user:42", 7, false, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &u4, "user:42", 7, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &u420, "user:42", 7, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &u42, "user:420", 8, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &u42, "user:42x", 8, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, NULL, "user:42", 7, NULL, why, sizeof why));
    /* the owner is the id up to the first '/', so user "42/inbox" owns nothing of 42's */
    assert_false(auth_may_subscribe(&o, &u42inbox, "user:42/inbox", 13, NULL, why, sizeof why));
    assert_false(auth_may_subscribe(&o, &u42inbox, "user:42/inbox/x", 15, NULL, why, sizeof why));
    assert_false(auth_may_publish(&o, &u42inbox, "user:42/inbox", 13, true, why, sizeof why));
    assert_true(auth_may_subscribe(&o, &u42, "user:42/inbox/x", 15, NULL, why, sizeof why));
    assert_false(auth_may_publish(&o, &u4, "user:42", 7, true, why, sizeof why));
    assert_non_null(strstr(why, "personal"));
}

/* ---------------------------------------------------------- rate limit */

static void test_a_bucket_allows_a_burst_then_refills_at_its_rate(void **state)
{
    (void)state;
    struct rate_bucket b = {0};
    int64_t t = 1000000;
    for (int i = 0; i < 5; i++)
        assert_true(rate_bucket_take(&b, 10, 5, t));
    assert_false(rate_bucket_take(&b, 10, 5, t));
    assert_false(rate_bucket_take(&b, 10, 5, t + 50000));   /* half a token */
    assert_true(rate_bucket_take(&b, 10, 5, t + 100000));   /* one token after 100 ms */
    assert_false(rate_bucket_take(&b, 10, 5, t + 100000));
    /* A long pause refills to the burst, never beyond. */
    for (int i = 0; i < 5; i++)
        assert_true(rate_bucket_take(&b, 10, 5, t + 60000000));
    assert_false(rate_bucket_take(&b, 10, 5, t + 60000000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_kind_of_token_gets_its_one_outcome),
        cmocka_unit_test(test_a_valid_token_yields_sub_info_channels_and_exp),
        cmocka_unit_test(test_a_token_need_not_be_nul_terminated),
        cmocka_unit_test(test_keys_that_cannot_check_es256_or_rs256_are_refused_at_load),
        cmocka_unit_test(test_channel_patterns_match_exactly_or_by_prefix_star),
        cmocka_unit_test(test_each_subscribe_rule_admits_one_and_refuses_another),
        cmocka_unit_test(test_each_publish_rule_admits_one_and_refuses_another),
        cmocka_unit_test(test_a_personal_channel_is_open_only_to_its_user),
        cmocka_unit_test(test_a_bucket_allows_a_burst_then_refills_at_its_rate),
    };
    return cmocka_run_group_tests_name("auth", tests, group_setup, group_teardown);
}
