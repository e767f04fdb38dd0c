/* client.c - the client object: lifecycle, the run loop, the cross-thread
 * inbox and the public requests (subscribe, publish, history).
 *
 * Invariant: a request is on exactly one of cl->queued (not written yet) and
 * cl->inflight (written, reply pending), or being completed, in which case it
 * is on neither and its callback runs once. n_pub/pub_bytes count the
 * publishes on both lists and bound them (max_queue, max_queue_bytes). */
#include "internal.h"
#include "url.h"

#include "codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ================================================================ helpers */

int64_t chorus__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void chorus__req_append(struct chorus__req_list *l, struct chorus__req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

void chorus__req_prepend(struct chorus__req_list *l, struct chorus__req *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

void chorus__req_unlink(struct chorus__req_list *l, struct chorus__req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/* Frees a request that is on no list, and releases its share of the bounds. */
void chorus__req_free(chorus_client_t *cl, struct chorus__req *r)
{
    if (!r)
        return;
    if (r->kind == CHORUS__REQ_PUB) {
        cl->n_pub--;
        cl->pub_bytes -= r->len;
    } else if (r->kind == CHORUS__REQ_HISTORY) {
        cl->n_hist--;
    }
    free(r->ch);
    free(r->frame);
    free(r->key);
    free(r);
}

static bool chorus__closed(const chorus_client_t *cl)
{
    return cl->freeing || cl->free_deferred;
}

/* Completes a request (on no list) with an error: its callback runs once,
 * then it is freed. */
void chorus__fail_req(chorus_client_t *cl, struct chorus__req *r, int status, const char *code,
                      const char *msg)
{
    if (!code)
        code = chorus_status_name(status);
    if (!msg)
        msg = chorus_strerror(status);
    if (r->kind == CHORUS__REQ_PUB && r->ack_cb) {
        chorus_ack_t a = {status, code, msg, r->ch, "", 0, false, r->key, r->attempts};
        r->ack_cb(cl, &a, r->ud);
    } else if (r->kind == CHORUS__REQ_HISTORY && r->hist_cb) {
        chorus_history_t h = {status, code, msg, r->ch, "", 0, 0, NULL};
        r->hist_cb(cl, &h, r->ud);
    }
    chorus__req_free(cl, r);
}

static struct chorus__req *chorus__req_new(chorus_client_t *cl, enum chorus__req_kind kind,
                                           const char *ch)
{
    struct chorus__req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->id = cl->next_id++;
    r->ch = strdup(ch);
    if (!r->ch) {
        free(r);
        return NULL;
    }
    return r;
}

/* Takes ownership of `j` and makes it the request's frame. */
static int chorus__req_set_frame(struct chorus__req *r, json_t *j)
{
    if (!j)
        return -1;
    r->frame = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!r->frame)
        return -1;
    r->len = strlen(r->frame);
    return 0;
}

struct chorus__sub *chorus__sub_find(const chorus_client_t *cl, const char *ch)
{
    for (struct chorus__sub *s = cl->subs; s; s = s->next)
        if (!strcmp(s->ch, ch))
            return s;
    return NULL;
}

void chorus__sub_remove(chorus_client_t *cl, struct chorus__sub *s)
{
    for (struct chorus__sub **pp = &cl->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            free(s->ch);
            free(s);
            return;
        }
    }
}

/* Builds the sub request for `s` ({"op":"sub","id","ch","since"?}) and marks
 * the subscription as waiting for it. The caller queues it. */
struct chorus__req *chorus__req_sub(chorus_client_t *cl, struct chorus__sub *s)
{
    struct chorus__req *r = chorus__req_new(cl, CHORUS__REQ_SUB, s->ch);
    if (!r)
        return NULL;
    json_t *j = json_pack("{s:s, s:I, s:s}", "op", "sub", "id", (json_int_t)r->id, "ch", s->ch);
    if (j && s->has_pos) {
        r->since = true;
        json_object_set_new(j, "since",
                            json_pack("{s:s, s:I}", "epoch", s->epoch, "seq", (json_int_t)s->seq));
    }
    if (chorus__req_set_frame(r, j) < 0) {
        chorus__req_free(cl, r);
        return NULL;
    }
    s->pending_id = r->id;
    s->active = false;
    return r;
}

static bool chorus__channel_ok(const char *ch)
{
    return ch && codec_channel_valid(ch, strlen(ch));
}

/* ============================================================== lifecycle */

static uint64_t chorus__seed(const void *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)p ^
                 ((uint64_t)getpid() << 16);
    return x ? x : 0x9e3779b97f4a7c15ull;
}

static char *chorus__strdup_opt(const char *s, bool *oom)
{
    if (!s || !*s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

chorus_client_t *chorus_client_new(const chorus_client_opts_t *opts)
{
    struct lws_context_creation_info info;
    struct chorus__url u;
    chorus_client_t *cl;
    bool oom = false;

    if (!opts || !opts->url || chorus__url_parse(opts->url, &u) != 0)
        return NULL;
    if (opts->origin && strpbrk(opts->origin, "\r\n"))
        return NULL; /* it becomes a header line */
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;

    cl->opts = *opts;
    chorus_client_opts_t *o = &cl->opts;
    if (!o->reconnect_min_ms)
        o->reconnect_min_ms = CHORUS__DEFAULT_RECONNECT_MIN_MS;
    if (!o->reconnect_max_ms)
        o->reconnect_max_ms = CHORUS__DEFAULT_RECONNECT_MAX_MS;
    if (o->reconnect_max_ms < o->reconnect_min_ms)
        o->reconnect_max_ms = o->reconnect_min_ms;
    if (!o->max_queue)
        o->max_queue = CHORUS__DEFAULT_MAX_QUEUE;
    if (!o->max_queue_bytes)
        o->max_queue_bytes = CHORUS__DEFAULT_MAX_QUEUE_BYTES;
    if (!o->max_frame_bytes)
        o->max_frame_bytes = CHORUS__DEFAULT_MAX_FRAME_BYTES;
    if (!o->max_rx_bytes)
        o->max_rx_bytes = CHORUS__DEFAULT_MAX_RX_BYTES;
    if (!o->request_timeout_ms)
        o->request_timeout_ms = CHORUS__DEFAULT_REQUEST_TIMEOUT_MS;
    if (!o->ping_interval_s)
        o->ping_interval_s = CHORUS__DEFAULT_PING_INTERVAL_S;
    if (o->ping_interval_s > 60000)
        o->ping_interval_s = 60000;
    if (!o->publish_retry_ms)
        o->publish_retry_ms = CHORUS__DEFAULT_PUBLISH_RETRY_MS;

    cl->url = chorus__strdup_opt(opts->url, &oom);
    cl->token = chorus__strdup_opt(opts->token, &oom);
    cl->origin_hdr = chorus__strdup_opt(opts->origin, &oom);
    cl->host = chorus__strdup_opt(u.host, &oom);
    o->url = cl->url;
    o->token = cl->token;
    o->origin = cl->origin_hdr;
    cl->port = u.port;
    cl->tls = u.tls;
    {
        size_t n = strlen(u.host) + 16;
        bool v6 = strchr(u.host, ':') != NULL, dflt = u.port == (u.tls ? 443 : 80);
        cl->host_hdr = malloc(n);
        if (!cl->host_hdr)
            oom = true;
        else if (dflt)
            snprintf(cl->host_hdr, n, "%s%s%s", v6 ? "[" : "", u.host, v6 ? "]" : "");
        else
            snprintf(cl->host_hdr, n, "%s%s%s:%d", v6 ? "[" : "", u.host, v6 ? "]" : "", u.port);
    }
    if (cl->token) {
        char *enc = chorus__url_encode(cl->token);
        size_t n = strlen(u.path) + (enc ? strlen(enc) : 0) + 8;
        cl->path = enc ? malloc(n) : NULL;
        if (cl->path)
            snprintf(cl->path, n, "%s%ctoken=%s", u.path, strchr(u.path, '?') ? '&' : '?', enc);
        else
            oom = true;
        free(enc);
    } else {
        cl->path = chorus__strdup_opt(u.path, &oom);
    }
    if (oom)
        goto fail_strings;

    /* lws' idle policy: PING after ping_interval_s of silence, hang up when
     * nothing proves the server alive for CHORUS__PING_GRACE_S more. */
    cl->idle_policy.secs_since_valid_ping = (uint16_t)o->ping_interval_s;
    cl->idle_policy.secs_since_valid_hangup = (uint16_t)(o->ping_interval_s + CHORUS__PING_GRACE_S);

    if (pthread_mutex_init(&cl->inbox_lock, NULL) != 0)
        goto fail_strings;
    atomic_init(&cl->wake_requested, 0);

    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = chorus__protocols;
    info.user = cl;
    info.fd_limit_per_thread = 16;
    info.timeout_secs = 10;
    info.connect_timeout_secs = 10;
    if (cl->tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    cl->ctx = lws_create_context(&info);
    if (!cl->ctx)
        goto fail_mutex;

    cl->rng = chorus__seed(cl);
    chorus__key_prefix_init(cl);
    cl->next_id = 1;
    cl->state = CHORUS__IDLE;
    lws_sul_schedule(cl->ctx, 0, &cl->sul_connect, chorus__connect, 1);
    lws_sul_schedule(cl->ctx, 0, &cl->sul_tick, chorus__tick, 500 * LWS_US_PER_MS);
    return cl;

fail_mutex:
    pthread_mutex_destroy(&cl->inbox_lock);
fail_strings:
    free(cl->url);
    free(cl->token);
    free(cl->origin_hdr);
    free(cl->host);
    free(cl->host_hdr);
    free(cl->path);
    free(cl);
    return NULL;
}

static void chorus__run_timer(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* firing is enough: it ends the poll() of chorus_client_run */
}

static void chorus__drain_inbox(chorus_client_t *cl);

/* Drops every task of the inbox, telling its owner. */
static void chorus__cancel_inbox(chorus_client_t *cl)
{
    struct chorus__task *t, *next;
    pthread_mutex_lock(&cl->inbox_lock);
    t = cl->inbox_head;
    cl->inbox_head = cl->inbox_tail = NULL;
    cl->inbox_n = 0;
    pthread_mutex_unlock(&cl->inbox_lock);
    for (; t; t = next) {
        next = t->next;
        if (t->fn) {
            t->fn(NULL, t->ud);
        } else if (t->ack_cb) {
            chorus_ack_t a = {CHORUS_E_CLOSED, chorus_status_name(CHORUS_E_CLOSED),
                              chorus_strerror(CHORUS_E_CLOSED), t->ch, "", 0, false, NULL, 0};
            t->ack_cb(cl, &a, t->ud);
        }
        free(t->ch);
        free(t->data);
        free(t);
    }
}

void chorus_client_free(chorus_client_t *cl)
{
    struct chorus__req *r;

    if (!cl || cl->freeing)
        return;
    if (cl->in_run) {
        cl->free_deferred = true; /* chorus_client_run() frees it on its way out */
        return;
    }
    cl->freeing = true;

    /* Say goodbye with a normal close when connected; bounded. */
    if (cl->wsi && (cl->state == CHORUS__OPEN || cl->state == CHORUS__READY)) {
        int64_t deadline = chorus__now_ms() + 300;
        chorus__close_connection(cl);
        lws_sul_schedule(cl->ctx, 0, &cl->sul_run, chorus__run_timer, 300 * LWS_US_PER_MS);
        while (cl->wsi && chorus__now_ms() < deadline)
            if (lws_service(cl->ctx, 0) < 0)
                break;
    }

    while ((r = cl->inflight.head)) {
        chorus__req_unlink(&cl->inflight, r);
        chorus__fail_req(cl, r, CHORUS_E_CLOSED, NULL, NULL);
    }
    while ((r = cl->queued.head)) {
        chorus__req_unlink(&cl->queued, r);
        chorus__fail_req(cl, r, CHORUS_E_CLOSED, NULL, NULL);
    }
    {
        struct chorus__req_list waiting = {NULL, NULL, 0};
        chorus__retry_cancel_all(cl, &waiting);
        while ((r = waiting.head)) {
            chorus__req_unlink(&waiting, r);
            chorus__fail_req(cl, r, CHORUS_E_CLOSED, NULL, NULL);
        }
    }
    chorus__cancel_inbox(cl);

    lws_sul_cancel(&cl->sul_connect);
    lws_sul_cancel(&cl->sul_tick);
    lws_sul_cancel(&cl->sul_run);
    lws_context_destroy(cl->ctx); /* closes what is left; the callbacks see `freeing` */
    cl->ctx = NULL;

    while (cl->subs)
        chorus__sub_remove(cl, cl->subs);
    pthread_mutex_destroy(&cl->inbox_lock);
    free(cl->rx);
    free(cl->tx);
    free(cl->url);
    free(cl->token);
    free(cl->origin_hdr);
    free(cl->host);
    free(cl->host_hdr);
    free(cl->path);
    free(cl);
}

int chorus_client_run(chorus_client_t *cl, int timeout_ms)
{
    int rc = CHORUS_OK;
    int64_t deadline = 0;

    if (!cl || cl->in_run || cl->freeing)
        return CHORUS_E_INVALID;
    cl->in_run = true;
    if (cl->state == CHORUS__DEAD) {
        /* Nothing to service, but tasks posted by other threads still run
         * (and their publishes fail with CHORUS_E_DISCONNECTED). */
        chorus__drain_inbox(cl);
        atomic_store(&cl->wake_requested, 0);
        cl->in_run = false;
        if (cl->free_deferred) {
            cl->free_deferred = false;
            chorus_client_free(cl);
            return CHORUS_E_CLOSED;
        }
        return CHORUS_E_DISCONNECTED;
    }
    if (timeout_ms > 0) {
        deadline = chorus__now_ms() + timeout_ms;
        lws_sul_schedule(cl->ctx, 0, &cl->sul_run, chorus__run_timer,
                         (lws_usec_t)timeout_ms * LWS_US_PER_MS);
    }
    chorus__drain_inbox(cl);
    for (;;) {
        /* lws_service() returns after each poll() wake-up; the timeout
         * argument only matters when negative (do not wait), and the wait is
         * bounded by the nearest sul, here sul_run. */
        if (lws_service(cl->ctx, timeout_ms == 0 ? -1 : 0) < 0) {
            rc = CHORUS_E_CLOSED;
            break;
        }
        chorus__drain_inbox(cl);
        if (atomic_exchange(&cl->wake_requested, 0) || cl->free_deferred)
            break;
        if (cl->state == CHORUS__DEAD) {
            rc = CHORUS_E_DISCONNECTED;
            break;
        }
        if (timeout_ms == 0 || (timeout_ms > 0 && chorus__now_ms() >= deadline))
            break;
    }
    lws_sul_cancel(&cl->sul_run);
    cl->in_run = false;
    if (cl->free_deferred) {
        cl->free_deferred = false;
        chorus_client_free(cl);
        return CHORUS_E_CLOSED;
    }
    return rc;
}

void chorus_client_wakeup(chorus_client_t *cl)
{
    if (!cl)
        return;
    atomic_store(&cl->wake_requested, 1);
    lws_cancel_service(cl->ctx);
}

void *chorus_client_user(const chorus_client_t *cl)
{
    return cl ? cl->opts.user : NULL;
}

bool chorus_client_is_connected(const chorus_client_t *cl)
{
    return cl && cl->state == CHORUS__READY;
}

size_t chorus_client_pending(const chorus_client_t *cl)
{
    return cl ? cl->n_pub + cl->n_hist : 0;
}

/* ========================================================== subscriptions */

static int chorus__subscribe(chorus_client_t *cl, const char *ch, const char *epoch, uint64_t seq,
                             chorus_msg_cb *cb, void *ud)
{
    struct chorus__sub *s;

    if (!cl || !cb)
        return CHORUS_E_INVALID;
    if (chorus__closed(cl))
        return CHORUS_E_CLOSED;
    if (cl->state == CHORUS__DEAD)
        return CHORUS_E_DISCONNECTED;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    if (epoch && strlen(epoch) > CHORUS_EPOCH_MAX)
        return CHORUS_E_INVALID;
    if (chorus__sub_find(cl, ch))
        return CHORUS_E_EXISTS;

    s = calloc(1, sizeof *s);
    if (!s)
        return CHORUS_E_NOMEM;
    s->ch = strdup(ch);
    if (!s->ch) {
        free(s);
        return CHORUS_E_NOMEM;
    }
    s->cb = cb;
    s->ud = ud;
    if (epoch) {
        s->has_pos = true;
        strcpy(s->epoch, epoch);
        s->seq = seq;
    }
    /* While disconnected the sub frame is built on `hello`, with every other. */
    if (cl->state == CHORUS__READY) {
        struct chorus__req *r = chorus__req_sub(cl, s);
        if (!r) {
            free(s->ch);
            free(s);
            return CHORUS_E_NOMEM;
        }
        chorus__req_append(&cl->queued, r);
        chorus__kick_writer(cl);
    }
    s->next = cl->subs;
    cl->subs = s;
    return CHORUS_OK;
}

int chorus_client_subscribe(chorus_client_t *cl, const char *ch, chorus_msg_cb *cb, void *ud)
{
    return chorus__subscribe(cl, ch, NULL, 0, cb, ud);
}

int chorus_client_subscribe_from(chorus_client_t *cl, const char *ch, const char *epoch,
                                 uint64_t seq, chorus_msg_cb *cb, void *ud)
{
    if (!epoch)
        return CHORUS_E_INVALID;
    return chorus__subscribe(cl, ch, epoch, seq, cb, ud);
}

int chorus_client_unsubscribe(chorus_client_t *cl, const char *ch)
{
    struct chorus__sub *s;

    if (!cl || !ch)
        return CHORUS_E_INVALID;
    s = chorus__sub_find(cl, ch);
    if (!s)
        return CHORUS_E_NOT_SUBSCRIBED;
    /* The entry goes now, so no message of `ch` is delivered after this; the
     * server is told when the connection is up (its reply is ignored). */
    if (cl->state == CHORUS__READY && !chorus__closed(cl)) {
        struct chorus__req *r = chorus__req_new(cl, CHORUS__REQ_UNSUB, ch);
        if (r && chorus__req_set_frame(r, json_pack("{s:s, s:I, s:s}", "op", "unsub", "id",
                                                    (json_int_t)r->id, "ch", ch)) == 0) {
            chorus__req_append(&cl->queued, r);
            chorus__kick_writer(cl);
        } else if (r) {
            chorus__req_free(cl, r);
        }
        /* Out of memory: the server keeps sending `ch` until the next
         * reconnect and the SDK drops it, which is still correct. */
    }
    chorus__sub_remove(cl, s);
    return CHORUS_OK;
}

int chorus_client_position(const chorus_client_t *cl, const char *ch,
                           char epoch[CHORUS_EPOCH_MAX + 1], uint64_t *seq)
{
    const struct chorus__sub *s;
    if (!cl || !ch)
        return CHORUS_E_INVALID;
    s = chorus__sub_find(cl, ch);
    if (!s)
        return CHORUS_E_NOT_SUBSCRIBED;
    if (!s->has_pos)
        return CHORUS_E_UNAVAILABLE;
    if (epoch)
        strcpy(epoch, s->epoch);
    if (seq)
        *seq = s->seq;
    return CHORUS_OK;
}

/* =============================================================== requests */

static int chorus__check_json(const char *text, size_t len)
{
    json_error_t jerr;
    /* The same flags the node decodes frames with (proto/codec.c). */
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                           &jerr);
    if (!j)
        return CHORUS_E_BAD_JSON;
    json_decref(j);
    return CHORUS_OK;
}

/* A caller's key as a JSON string (escaped by jansson, which also refuses
 * text that is not UTF-8), or NULL when it is not a valid key. */
static char *chorus__key_json(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > CHORUS_KEY_MAX)
        return NULL;
    json_t *j = json_string(key);
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    return text;
}

static void chorus__req_discard(struct chorus__req *r)
{
    free(r->frame);
    free(r->ch);
    free(r->key);
    free(r);
}

/* Queues a publish of already validated JSON text; `key` is the caller's
 * (validated by chorus__key_json) or NULL for one of the SDK's. */
static int chorus__publish_checked(chorus_client_t *cl, const char *ch, const char *data,
                                   const char *key, chorus_ack_cb *cb, void *ud)
{
    struct chorus__req *r;
    size_t dlen = strlen(data), need;
    char gen[CHORUS__KEY_PREFIX_LEN + 16];
    char *key_json = NULL;

    if (chorus__closed(cl))
        return CHORUS_E_CLOSED;
    if (cl->state == CHORUS__DEAD)
        return CHORUS_E_DISCONNECTED;
    if (dlen > cl->opts.max_frame_bytes)
        return CHORUS_E_TOO_LARGE;
    if (cl->n_pub + 1 > cl->opts.max_queue)
        return CHORUS_E_QUEUE_FULL;
    if (!key && !cl->opts.no_publish_retry) {
        chorus__key_generate(cl, gen, sizeof gen);
        key = gen;
    }
    if (key && !(key_json = chorus__key_json(key)))
        return key == gen ? CHORUS_E_NOMEM : CHORUS_E_INVALID;

    r = chorus__req_new(cl, CHORUS__REQ_PUB, ch);
    if (!r) {
        free(key_json);
        return CHORUS_E_NOMEM;
    }
    /* {"op":"pub","id":N,"ch":"...","key":"...","data":...}: the channel
     * needs no escaping (validated) and the data text is spliced as it is. */
    need = 96 + strlen(ch) + dlen + (key_json ? strlen(key_json) : 0);
    r->frame = malloc(need);
    r->key = key ? strdup(key) : NULL;
    if (!r->frame || (key && !r->key)) {
        free(key_json);
        chorus__req_discard(r);
        return CHORUS_E_NOMEM;
    }
    int hl = snprintf(r->frame, need, "{\"op\":\"pub\",\"id\":%" PRIu64 ",\"ch\":\"%s\"%s%s,\"data\":",
                      r->id, ch, key_json ? ",\"key\":" : "", key_json ? key_json : "");
    free(key_json);
    memcpy(r->frame + hl, data, dlen);
    r->frame[hl + dlen] = '}';
    r->frame[hl + dlen + 1] = '\0';
    r->len = (size_t)hl + dlen + 1;
    r->ack_cb = cb;
    r->ud = ud;
    r->created_ms = chorus__now_ms();
    if (r->len > cl->opts.max_frame_bytes || cl->pub_bytes + r->len > cl->opts.max_queue_bytes) {
        int st = r->len > cl->opts.max_frame_bytes ? CHORUS_E_TOO_LARGE : CHORUS_E_QUEUE_FULL;
        chorus__req_discard(r);
        return st;
    }
    cl->n_pub++;
    cl->pub_bytes += r->len;
    chorus__req_append(&cl->queued, r);
    chorus__kick_writer(cl);
    return CHORUS_OK;
}

int chorus_client_publish(chorus_client_t *cl, const char *ch, const char *json_data,
                          chorus_ack_cb *cb, void *ud)
{
    int rc;
    if (!cl || !json_data)
        return CHORUS_E_INVALID;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    if ((rc = chorus__check_json(json_data, strlen(json_data))) != CHORUS_OK)
        return rc;
    return chorus__publish_checked(cl, ch, json_data, NULL, cb, ud);
}

int chorus_client_publish_ex(chorus_client_t *cl, const char *ch, const char *json_data,
                             const chorus_publish_opts_t *opts, chorus_ack_cb *cb, void *ud)
{
    int rc;
    if (!cl || !json_data)
        return CHORUS_E_INVALID;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    if (opts && opts->key && (!*opts->key || strlen(opts->key) > CHORUS_KEY_MAX))
        return CHORUS_E_INVALID;
    if ((rc = chorus__check_json(json_data, strlen(json_data))) != CHORUS_OK)
        return rc;
    return chorus__publish_checked(cl, ch, json_data, opts ? opts->key : NULL, cb, ud);
}

int chorus_client_publish_json(chorus_client_t *cl, const char *ch, const struct json_t *data,
                               chorus_ack_cb *cb, void *ud)
{
    if (!cl || !data)
        return CHORUS_E_INVALID;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return CHORUS_E_BAD_JSON; /* NaN/Inf reals or an allocation failure */
    int rc = chorus__publish_checked(cl, ch, text, NULL, cb, ud);
    free(text);
    return rc;
}

int chorus_client_history(chorus_client_t *cl, const char *ch, const chorus_history_opts_t *opts,
                          chorus_history_cb *cb, void *ud)
{
    struct chorus__req *r;
    json_t *j;

    if (!cl || !cb)
        return CHORUS_E_INVALID;
    if (chorus__closed(cl))
        return CHORUS_E_CLOSED;
    if (cl->state == CHORUS__DEAD)
        return CHORUS_E_DISCONNECTED;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    if (opts && (opts->limit < 0 ||
                 (opts->since_epoch && strlen(opts->since_epoch) > CHORUS_EPOCH_MAX)))
        return CHORUS_E_INVALID;
    if (cl->n_hist + 1 > cl->opts.max_queue)
        return CHORUS_E_QUEUE_FULL;

    r = chorus__req_new(cl, CHORUS__REQ_HISTORY, ch);
    if (!r)
        return CHORUS_E_NOMEM;
    r->hist_cb = cb;
    r->ud = ud;
    j = json_pack("{s:s, s:I, s:s}", "op", "history", "id", (json_int_t)r->id, "ch", ch);
    if (j && opts && opts->limit > 0)
        json_object_set_new(j, "limit", json_integer(opts->limit));
    if (j && opts && opts->since_epoch)
        json_object_set_new(j, "since", json_pack("{s:s, s:I}", "epoch", opts->since_epoch,
                                                  "seq", (json_int_t)opts->since_seq));
    cl->n_hist++; /* counted from here so chorus__req_free balances it */
    if (chorus__req_set_frame(r, j) < 0) {
        chorus__req_free(cl, r);
        return CHORUS_E_NOMEM;
    }
    chorus__req_append(&cl->queued, r);
    chorus__kick_writer(cl);
    return CHORUS_OK;
}

char *chorus_msg_data_text(const chorus_msg_t *msg)
{
    if (!msg || !msg->data)
        return NULL;
    return json_dumps(msg->data, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* ================================================================== inbox */

static int chorus__inbox_push(chorus_client_t *cl, struct chorus__task *t)
{
    pthread_mutex_lock(&cl->inbox_lock);
    if (cl->inbox_n >= cl->opts.max_queue) {
        pthread_mutex_unlock(&cl->inbox_lock);
        return CHORUS_E_QUEUE_FULL;
    }
    t->next = NULL;
    if (cl->inbox_tail)
        cl->inbox_tail->next = t;
    else
        cl->inbox_head = t;
    cl->inbox_tail = t;
    cl->inbox_n++;
    pthread_mutex_unlock(&cl->inbox_lock);
    lws_cancel_service(cl->ctx);
    return CHORUS_OK;
}

int chorus_client_publish_ts(chorus_client_t *cl, const char *ch, const char *json_data,
                             chorus_ack_cb *cb, void *ud)
{
    struct chorus__task *t;
    int rc;

    if (!cl || !json_data)
        return CHORUS_E_INVALID;
    if (!chorus__channel_ok(ch))
        return CHORUS_E_BAD_CHANNEL;
    if ((rc = chorus__check_json(json_data, strlen(json_data))) != CHORUS_OK)
        return rc;
    t = calloc(1, sizeof *t);
    if (!t)
        return CHORUS_E_NOMEM;
    t->ch = strdup(ch);
    t->data = strdup(json_data);
    t->ack_cb = cb;
    t->ud = ud;
    if (!t->ch || !t->data) {
        rc = CHORUS_E_NOMEM;
        goto fail;
    }
    if ((rc = chorus__inbox_push(cl, t)) != CHORUS_OK)
        goto fail;
    return CHORUS_OK;

fail:
    free(t->ch);
    free(t->data);
    free(t);
    return rc;
}

int chorus_client_post(chorus_client_t *cl, chorus_task_cb *fn, void *ud)
{
    struct chorus__task *t;
    int rc;

    if (!cl || !fn)
        return CHORUS_E_INVALID;
    t = calloc(1, sizeof *t);
    if (!t)
        return CHORUS_E_NOMEM;
    t->fn = fn;
    t->ud = ud;
    if ((rc = chorus__inbox_push(cl, t)) != CHORUS_OK) {
        free(t);
        return rc;
    }
    return CHORUS_OK;
}

/* Runs the inbox on the loop thread, in order. Tasks taken after a deferred
 * free are cancelled like those chorus_client_free() finds. */
static void chorus__drain_inbox(chorus_client_t *cl)
{
    struct chorus__task *t, *next;

    pthread_mutex_lock(&cl->inbox_lock);
    t = cl->inbox_head;
    cl->inbox_head = cl->inbox_tail = NULL;
    cl->inbox_n = 0;
    pthread_mutex_unlock(&cl->inbox_lock);

    for (; t; t = next) {
        next = t->next;
        if (t->fn) {
            t->fn(chorus__closed(cl) ? NULL : cl, t->ud);
        } else {
            int rc = chorus__publish_checked(cl, t->ch, t->data, NULL, t->ack_cb, t->ud);
            if (rc != CHORUS_OK && t->ack_cb) {
                chorus_ack_t a = {rc, chorus_status_name(rc), chorus_strerror(rc), t->ch, "", 0,
                                  false, NULL, 0};
                t->ack_cb(cl, &a, t->ud);
            }
        }
        free(t->ch);
        free(t->data);
        free(t);
    }
}
