/* tls_reload.c - the TLS certificate and key read again on SIGHUP (tls_reload.h). */
#include "tls_reload.h"
#include "log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEM_MAX (1 << 20)

static struct {
    char *cert, *key;             /* the texts last loaded */
    size_t cert_len, key_len;
} tr;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(PEM_MAX);
    size_t n = buf ? fread(buf, 1, PEM_MAX, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n == PEM_MAX) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static bool same(const char *a, size_t al, const char *b, size_t bl)
{
    return a && b && al == bl && !memcmp(a, b, al);
}

void tls_reload_init(const struct config *cfg)
{
    tls_reload_free();
    if (!cfg->tls_cert || !cfg->tls_key)
        return;
    tr.cert = slurp(cfg->tls_cert, &tr.cert_len);
    tr.key = slurp(cfg->tls_key, &tr.key_len);
}

/* The pair as OpenSSL would serve it: the chain, the key, and that they match. */
static bool valid_pair(const char *cert, const char *key, char *why, size_t cap)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    bool ok = c && SSL_CTX_use_certificate_chain_file(c, cert) == 1 &&
              SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) == 1 &&
              SSL_CTX_check_private_key(c) == 1;
    if (!ok)
        ERR_error_string_n(ERR_get_error(), why, cap);
    ERR_clear_error();
    SSL_CTX_free(c);
    return ok;
}

int tls_reload(struct lws_context *ctx, const struct config *cfg)
{
    if (!cfg->tls_cert || !cfg->tls_key || !ctx)
        return 0;
    size_t cl = 0, kl = 0;
    char *cert = slurp(cfg->tls_cert, &cl), *key = slurp(cfg->tls_key, &kl);
    int rc = 0;
    char why[256] = "";
    if (!cert || !key) {
        log_error("event=reload_failed key=tls-cert file=%s key_file=%s msg=\"cannot read the "
                  "certificate or the key (empty, missing or over 1 MiB); the running certificate "
                  "stays\"", cfg->tls_cert, cfg->tls_key);
        rc = -1;
    } else if (same(cert, cl, tr.cert, tr.cert_len) && same(key, kl, tr.key, tr.key_len)) {
        rc = 0;
    } else if (!valid_pair(cfg->tls_cert, cfg->tls_key, why, sizeof why)) {
        log_error("event=reload_failed key=tls-cert file=%s key_file=%s error=\"%s\" msg=\"not a "
                  "certificate chain and its private key; the running certificate stays\"",
                  cfg->tls_cert, cfg->tls_key, why);
        rc = -1;
    } else {
        lws_tls_cert_updated(ctx, cfg->tls_cert, cfg->tls_key, NULL, 0, NULL, 0);
        log_info("event=reload_changed key=tls-cert file=%s key_file=%s msg=\"new handshakes use "
                 "the new certificate; open connections keep theirs\"", cfg->tls_cert, cfg->tls_key);
        free(tr.cert);
        free(tr.key);
        tr.cert = cert;
        tr.key = key;
        tr.cert_len = cl;
        tr.key_len = kl;
        cert = key = NULL;
        rc = 1;
    }
    free(cert);
    free(key);
    return rc;
}

void tls_reload_free(void)
{
    free(tr.cert);
    free(tr.key);
    memset(&tr, 0, sizeof tr);
}
