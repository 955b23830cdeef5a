/*
 * wsload -- single-threaded epoll WebSocket load client for the gws13 benchmarks.
 *
 *   echo   : C connections x W messages in flight of S bytes for D seconds (after a warm-up).
 *            Every echoed byte is verified.  Prints msg/s, MB/s, RTT p50/p90/p99/max and the
 *            client's own CPU share of the measured window.
 *   idle   : open C connections, print a "ready" line, then obey stdin: "echo" sends one message
 *            on every connection and prints a "done" line once all echoes are back; EOF exits.
 *   fanout : open C connections; one of them sends "broadcast:<payload>" (text), the client
 *            measures the time until the LAST other connection received <payload>; repeated
 *            for D seconds (at least 3 rounds) after one warm-up round.
 *   storm  : reconnect storm.  N connections in all (-n, after -W warm-up ones that are not
 *            counted), at most C (-c) at once, each: connect, upgrade (101 and the accept
 *            value checked), one 32 B text message, its echo verified, close frame 1000, the
 *            server's close frame awaited, then an abortive close.  Prints conn/s, the
 *            connect -> echo latency p50/p99/max, failures by reason and the client's CPU share.
 *
 * Client frames are masked with a non-zero key.  -r skips the HTTP upgrade so that a raw TCP
 * echo server can be driven: it bounces our masked frames, which are parsed and checked too.
 * Server pings are answered with pongs (servers keep their default keepalive), fragmented
 * messages are accepted.  One JSON object per output line.
 *
 * -z (echo, text): permessage-deflate as a browser does it.  The upgrade offers
 * "permessage-deflate; client_max_window_bits" (Chrome's offer), the answer's parameters are
 * honoured, messages are compressed with context takeover (Chrome's zlib settings: default
 * level, memLevel 8, the window the server allows; computed once, see struct zset) and every
 * reply is inflated and verified byte for byte.
 * The messages are a deterministic pool (-S seed) of distinct JSON documents of exactly -s
 * bytes, so the compressor sees realistic, varying text rather than one repeated string.  A
 * server that does not negotiate gets the same messages uncompressed.  Wire bytes received per
 * message (frame headers included) are reported in every mode.
 *
 * -L (echo, idle): over TLS (wss://), with OpenSSL: the certificate is not verified (a
 * benchmark's self-signed one), TLS 1.2 or 1.3 as the server prefers; read-ahead is on, so one
 * recv() can bring several records, and every readable wake-up reads until OpenSSL wants more.
 *
 * Build: gcc -O2 -o wsload wsload.c -lz -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

enum { CONNECTING, TLS_HS, HANDSHAKE, OPEN, DEAD };
enum { M_ECHO, M_IDLE, M_FANOUT, M_STORM };

/* -z: the masked frames of the message sequence for one negotiated client window.  Message k goes
 * out as first[k] in the first cycle through the pool and as later[k % NPOOL] ever after: later
 * was compressed with the first cycle as history, and back-references are distances, so it stays
 * a valid continuation of the stream in every further cycle (the content repeats with period
 * NPOOL).  The wire carries exactly what a live context-takeover compressor would send, but the
 * load client does not spend 20+ us of zlib per message and become the bottleneck. */
#define NPOOL 384
struct zset {
    int bits, nct;
    uint8_t *buf;
    size_t off[2 * NPOOL + 1];
};

typedef struct {
    int fd, state, want_out;
    char hs[1024];
    int hs_len, hs_sent;
    /* data output: out_pending bytes still to send from the repeating frame stream */
    uint64_t out_pending, out_pos;
    /* control output (pong, broadcast request): only written at a frame boundary */
    uint8_t x[512];
    int x_len, x_off;
    /* frame parser */
    uint8_t hdr[14];
    int hdr_have, hdr_need, opcode, masked, fin, msg_op;
    uint8_t mkey[4];
    uint64_t len, done, msg_off;
    uint8_t ctl[125];
    /* messages in flight (ring of send times) */
    uint64_t *ts;
    int ts_head, inflight;
    int got; /* fanout: received the current payload; idle: echoed; storm: echoed */
    int bad; /* storm: a payload byte differed */
    uint64_t t_start, t_echo; /* storm: when connect() was called, when the echo was in */
    /* -z: every frame is built per message into ob (context takeover makes each one unique) */
    uint8_t *ob;
    size_t ob_len, ob_off, ob_cap;
    uint64_t sseq, rseq;  /* messages sent / received: index the message pool */
    int pmd, srv_nct, msg_z;
    struct zset *zs; /* the frames it sends */
    z_stream zi;
    SSL *ssl; /* -L */
} conn_t;

static const char *host = "127.0.0.1", *path = "/";
static int port, mode = M_ECHO, raw, nconns = 1, window = 1, text, hs_conc = 64;
static size_t msize = 32;
static double duration = 5, warmup = 1, conn_timeout = 120;
static int storm_n = 5000, storm_warm = 200;
static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

static int epfd, n_open, n_dead, n_conn, next_conn;
static conn_t *conns;
static uint8_t *stream, *plain, *masked_ref, rbuf[1 << 18];
static size_t flen, stream_len;
static char req[512];
static int req_len;
static const char *last_err = "";
static uint64_t n_msgs, n_bytes, n_bad, n_pings, n_got, n_wire_in, n_wire_out;
/* -z: message pool, scratch for one compressed frame and for inflater output */
static int zmode;
static unsigned seed = 1;
static uint8_t *pool[NPOOL];
static uint8_t zout[1 << 16];
static struct zset zsets[4], plainset;
static int n_zsets;
static char ext_answer[200];
static int measuring;
static SSL_CTX *tls_ctx; /* -L */
/* fanout: current broadcast payload */
static uint8_t bc[400];
static size_t bc_len;
static uint64_t bc_t0, bc_last, bc_first;

/* log-linear latency histogram (ns): 64 sub-buckets per power of two, ~1.6 % resolution */
#define NB (60 * 64)
static uint64_t hist[NB], hist_n;
static int bucket(uint64_t v) {
    if (v < 64) return (int)v;
    int e = 63 - __builtin_clzll(v);
    return (e - 5) * 64 + (int)((v >> (e - 6)) & 63);
}
static double bucket_val(int i) {
    if (i < 64) return i;
    int e = i / 64 + 5;
    return (64 + i % 64 + 0.5) * (double)(1ull << (e - 6)); /* bucket midpoint */
}
static double pct_us(const uint64_t *h, uint64_t n, double p) {
    if (!n) return 0;
    uint64_t want = (uint64_t)(p * (n - 1)) + 1, acc = 0;
    for (int i = 0; i < NB; i++)
        if ((acc += h[i]) >= want) return bucket_val(i) / 1000.0;
    return 0;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}
static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static void storm_failed(const char *why);

static void storm_free(conn_t *c);

static void kill_conn(conn_t *c, const char *why) {
    if (c->state == DEAD) return;
    last_err = why;
    if (mode == M_STORM) { storm_failed(why); storm_free(c); }
    if (c->state == OPEN) n_open--; else n_conn--;
    c->state = DEAD;
    n_dead++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) { SSL_free(c->ssl); c->ssl = NULL; }
    close(c->fd);
}

/* send()/recv() on the connection, through TLS with -L: the same return values and errno
 * (EAGAIN while OpenSSL waits for the socket, whichever direction it waits for) */
static ssize_t io_send(conn_t *c, const void *buf, size_t len) {
    if (!c->ssl) return send(c->fd, buf, len, MSG_NOSIGNAL);
    int r = SSL_write(c->ssl, buf, len > (1u << 30) ? 1 << 30 : (int)len);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
    return -1;
}

static ssize_t io_recv(conn_t *c, void *buf, size_t len) {
    if (!c->ssl) return recv(c->fd, buf, len, 0);
    int r = SSL_read(c->ssl, buf, len > (1u << 30) ? 1 << 30 : (int)len);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : ECONNRESET;
    return -1;
}

static void want_out(conn_t *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* header of a masked client frame; returns its length */
static size_t put_hdr(uint8_t *p, int op, uint64_t n) {
    size_t h = 2;
    p[0] = 0x80 | op;
    if (n < 126) p[1] = 0x80 | n;
    else if (n < 65536) { p[1] = 0x80 | 126; p[2] = n >> 8; p[3] = n; h = 4; }
    else { p[1] = 0x80 | 127; for (int i = 0; i < 8; i++) p[2 + i] = n >> (56 - 8 * i); h = 10; }
    memcpy(p + h, KEY, 4);
    return h + 4;
}

/* queue a small control/request frame (payload masked here) */
static void ob_reserve(conn_t *c, size_t n) {
    if (c->ob_off && c->ob_off == c->ob_len) c->ob_off = c->ob_len = 0;
    if (c->ob_len + n <= c->ob_cap) return;
    if (c->ob_off) { /* slide the unsent rest down before growing */
        memmove(c->ob, c->ob + c->ob_off, c->ob_len - c->ob_off);
        c->ob_len -= c->ob_off;
        c->ob_off = 0;
    }
    while (c->ob_len + n > c->ob_cap) c->ob_cap = c->ob_cap ? c->ob_cap * 2 : 1 << 16;
    c->ob = realloc(c->ob, c->ob_cap);
}

static void queue_x(conn_t *c, int op, const uint8_t *pl, size_t n) {
    if (zmode) { /* ob holds whole frames only: a control frame simply goes next */
        ob_reserve(c, n + 14);
        size_t h = put_hdr(c->ob + c->ob_len, op, n);
        for (size_t i = 0; i < n; i++) c->ob[c->ob_len + h + i] = pl[i] ^ KEY[i & 3];
        c->ob_len += h + n;
        return;
    }
    if (c->x_len + 14 + n > sizeof c->x) { n_bad++; return; }
    uint8_t *p = c->x + c->x_len;
    size_t h = put_hdr(p, op, n);
    for (size_t i = 0; i < n; i++) p[h + i] = pl[i] ^ KEY[i & 3];
    c->x_len += h + n;
}

static void flush(conn_t *c) {
    while (zmode && c->ob_off < c->ob_len) {
        ssize_t w = io_send(c, c->ob + c->ob_off, c->ob_len - c->ob_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { want_out(c, 1); return; }
            kill_conn(c, "send");
            return;
        }
        c->ob_off += w;
    }
    for (;;) {
        const uint8_t *buf;
        size_t len;
        int ctl = c->x_len > 0 && c->out_pos % flen == 0; /* only between data frames */
        if (ctl) { buf = c->x + c->x_off; len = c->x_len - c->x_off; }
        else if (c->out_pending) {
            size_t off = c->out_pos % flen, avail = stream_len - off;
            buf = stream + off;
            len = c->out_pending < avail ? c->out_pending : avail;
        } else break;
        ssize_t w = io_send(c, buf, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { want_out(c, 1); return; }
            kill_conn(c, "send");
            return;
        }
        if (ctl) {
            if ((c->x_off += w) == c->x_len) c->x_off = c->x_len = 0;
        } else {
            c->out_pending -= w;
            c->out_pos += w;
        }
    }
    want_out(c, 0);
}

/* -z: the message a connection sends (and expects back) as its seq-th */
static const uint8_t *pool_msg(conn_t *c, uint64_t seq) { (void)c; return pool[seq % NPOOL]; }

/* put_hdr + masked payload; rsv1 marks a compressed message */
static size_t put_frame(uint8_t *p, int rsv1, const uint8_t *pl, size_t n) {
    size_t h = put_hdr(p, 1, n);
    if (rsv1) p[0] |= 0x40;
    for (size_t i = 0; i < n; i++) p[h + i] = pl[i] ^ KEY[i & 3];
    return h + n;
}

/* the frames for a client window of 2**bits (bits 0: uncompressed), with or without context */
static void build_zset(struct zset *z, int bits, int nct) {
    z_stream zd = {0};
    size_t cap = 2 * NPOOL * (deflateBound(NULL, msize) + 80), n = 0;
    uint8_t *tmp = malloc(deflateBound(NULL, msize) + 64);
    z->bits = bits;
    z->nct = nct;
    z->buf = malloc(cap);
    /* Chrome's settings; zlib cannot make a 256-byte window: Huffman-only output has no references */
    if (bits && deflateInit2(&zd, Z_DEFAULT_COMPRESSION, Z_DEFLATED, bits < 9 ? -9 : -bits, 8,
                             bits < 9 ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY) != Z_OK) exit(3);
    for (int k = 0; k < 2 * NPOOL; k++) {
        z->off[k] = n;
        if (!bits) { n += put_frame(z->buf + n, 0, pool[k % NPOOL], msize); continue; }
        zd.next_in = pool[k % NPOOL];
        zd.avail_in = msize;
        zd.next_out = tmp;
        zd.avail_out = deflateBound(NULL, msize) + 64;
        if (deflate(&zd, Z_SYNC_FLUSH) != Z_OK || zd.avail_in) exit(3);
        size_t m = zd.next_out - tmp;
        if (m >= 4 && !memcmp(tmp + m - 4, "\0\0\xff\xff", 4)) m -= 4; /* RFC 7692 7.2.1 */
        if (!m) tmp[m++] = 0; /* an empty message is one empty block */
        n += put_frame(z->buf + n, 1, tmp, m);
        if (nct) deflateReset(&zd);
    }
    z->off[2 * NPOOL] = n;
    if (bits) deflateEnd(&zd);
    free(tmp);
}

static struct zset *get_zset(int bits, int nct) {
    if (!bits) { if (!plainset.buf) build_zset(&plainset, 0, 0); return &plainset; }
    for (int i = 0; i < n_zsets; i++) if (zsets[i].bits == bits && zsets[i].nct == nct) return &zsets[i];
    if (n_zsets == 4) return NULL;
    build_zset(&zsets[n_zsets], bits, nct);
    return &zsets[n_zsets++];
}

static void zsend(conn_t *c) {
    uint64_t k = c->sseq++;
    int i = k < NPOOL ? (int)k : NPOOL + (int)(k % NPOOL);
    size_t n = c->zs->off[i + 1] - c->zs->off[i];
    ob_reserve(c, n);
    memcpy(c->ob + c->ob_len, c->zs->buf + c->zs->off[i], n);
    c->ob_len += n;
    if (measuring) n_wire_out += n;
}

static void send_msgs(conn_t *c, int k, uint64_t t) {
    if (zmode) {
        for (int i = 0; i < k; i++) { c->ts[(c->ts_head + c->inflight + i) % window] = t; zsend(c); }
        c->inflight += k;
        return;
    }
    for (int i = 0; i < k; i++) c->ts[(c->ts_head + c->inflight + i) % window] = t;
    c->inflight += k;
    c->out_pending += (uint64_t)k * flen;
}

/* a complete data message arrived on c (payload already verified chunk by chunk) */
static void on_message(conn_t *c, uint64_t t) {
    if (mode == M_STORM) {
        if (c->got || c->bad || c->msg_off != msize || c->msg_op != 1) { kill_conn(c, "wrong echo"); return; }
        static const uint8_t normal_closure[2] = {1000 >> 8, 1000 & 255};
        c->got = 1;
        c->t_echo = t; /* counted once the close handshake completes too: latencies of completed ones */
        queue_x(c, 8, normal_closure, 2);
        flush(c);
        return;
    }
    if (mode == M_FANOUT) {
        if (c->msg_off != bc_len || c->got) { n_bad++; return; }
        c->got = 1;
        n_got++;
        if (!bc_first || t - bc_t0 < bc_first) bc_first = t - bc_t0;
        if (t - bc_t0 > bc_last) bc_last = t - bc_t0;
        return;
    }
    if (c->inflight <= 0 || c->msg_off != msize || c->msg_op != (text ? 1 : 2)) { n_bad++; return; }
    uint64_t t0 = c->ts[c->ts_head];
    c->ts_head = (c->ts_head + 1) % window;
    c->rseq++;
    c->inflight--;
    if (mode == M_IDLE) { c->got = 1; n_got++; }
    if (measuring) { n_msgs++; n_bytes += msize; hist[bucket(t - t0)]++; hist_n++; }
}

static void storm_close_frame(conn_t *c);
/* -z: inflate a piece of a compressed reply and compare it with what was sent */
static void zcheck(conn_t *c, const uint8_t *b, size_t n) {
    const uint8_t *ref = pool_msg(c, c->rseq);
    c->zi.next_in = (uint8_t *)b;
    c->zi.avail_in = n;
    for (;;) {
        c->zi.next_out = zout;
        c->zi.avail_out = sizeof zout;
        int r = inflate(&c->zi, Z_SYNC_FLUSH);
        size_t got = sizeof zout - c->zi.avail_out;
        if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) { n_bad++; inflateReset(&c->zi); return; }
        if (c->msg_off + got > msize || memcmp(zout, ref + c->msg_off, got)) n_bad++;
        c->msg_off += got;
        /* a final block ends the peer's stream: what may follow is the 00 00 ff ff tail only */
        if (r == Z_STREAM_END) { inflateReset(&c->zi); return; }
        if (c->zi.avail_out || !c->zi.avail_in) return;
    }
}

/* parse received bytes; returns number of complete data messages, -1 if the conn died */
static int parse(conn_t *c, const uint8_t *b, size_t n, uint64_t t) {
    int msgs = 0;
    size_t i = 0;
    while (i < n) {
        if (c->hdr_need == 0 || c->hdr_have < c->hdr_need) {
            if (!c->hdr_need) c->hdr_need = 2;
            while (c->hdr_have < c->hdr_need && i < n) {
                c->hdr[c->hdr_have++] = b[i++];
                if (c->hdr_have == 2) {
                    int l = c->hdr[1] & 127;
                    c->hdr_need = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + (c->hdr[1] & 128 ? 4 : 0);
                }
            }
            if (c->hdr_have < c->hdr_need) break;
            int l = c->hdr[1] & 127, p = 2;
            c->len = l;
            if (l == 126) { c->len = c->hdr[2] << 8 | c->hdr[3]; p = 4; }
            if (l == 127) { c->len = 0; for (int k = 0; k < 8; k++) c->len = c->len << 8 | c->hdr[2 + k]; p = 10; }
            c->masked = c->hdr[1] >> 7;
            if (c->masked) memcpy(c->mkey, c->hdr + p, 4);
            c->opcode = c->hdr[0] & 15;
            c->fin = c->hdr[0] >> 7;
            c->done = 0;
            if (c->opcode == 1 || c->opcode == 2) {
                c->msg_op = c->opcode;
                c->msg_off = 0;
                c->msg_z = (c->hdr[0] & 0x40) != 0;
                if (c->msg_z && !c->pmd) n_bad++; /* RSV1 without the extension */
            }
            else if (c->opcode == 8 && mode != M_STORM) { kill_conn(c, "server sent close"); return -1; }
            else if (c->opcode >= 8 && c->len > 125) { kill_conn(c, "bad control frame"); return -1; }
        }
        size_t take = n - i < c->len - c->done ? n - i : c->len - c->done;
        if (c->opcode >= 8) {
            memcpy(c->ctl + c->done, b + i, take);
        } else if (take && zmode) {
            if (c->masked) { n_bad++; } /* a server never masks */
            else if (c->msg_z) zcheck(c, b + i, take);
            else {
                if (c->msg_off + take > msize || memcmp(b + i, pool_msg(c, c->rseq) + c->msg_off, take)) n_bad++;
                c->msg_off += take;
            }
        } else if (take) {
            /* verify: a raw echo returns our masked bytes, a WS server the plain payload */
            const uint8_t *ref = mode == M_FANOUT ? bc : (c->masked && !memcmp(c->mkey, KEY, 4)) ? masked_ref : plain;
            size_t lim = mode == M_FANOUT ? bc_len : msize;
            if (c->msg_off + take > lim || memcmp(b + i, ref + c->msg_off, take)) { n_bad++; c->bad = 1; }
            c->msg_off += take;
        }
        c->done += take;
        i += take;
        if (c->done < c->len) break;
        if (measuring && c->opcode < 3) n_wire_in += c->hdr_need + c->len;
        c->hdr_have = c->hdr_need = 0;
        if (c->opcode == 9) { /* ping -> pong */
            n_pings++;
            if (c->masked) for (uint64_t k = 0; k < c->len; k++) c->ctl[k] ^= c->mkey[k & 3];
            queue_x(c, 10, c->ctl, c->len);
            flush(c);
            if (c->state != OPEN) return -1;
        } else if (c->opcode == 8) { /* storm only: the others stopped at the header */
            storm_close_frame(c);
            return -1;
        } else if (c->opcode < 3 && c->fin) {
            if (zmode && c->msg_z) {
                zcheck(c, (const uint8_t *)"\0\0\xff\xff", 4);
                if (c->srv_nct) inflateReset(&c->zi);
            }
            on_message(c, t);
            msgs++;
            if (c->state == DEAD) return -1;
        }
    }
    return msgs;
}

/* a connect error as a failure reason: refused and out-of-ports storms must read differently */
static const char *connect_err(int e) {
    switch (e) {
    case ECONNREFUSED: return "connect refused";
    case ECONNRESET: return "connection reset";
    case EADDRNOTAVAIL: return "connect: no free local port";
    case ETIMEDOUT: return "connect timed out";
    default: return "connect failed";
    }
}

static void start_connect(conn_t *c) {
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    n_conn++;
    c->state = CONNECTING;
    if (c->fd < 0) { kill_conn(c, "socket (fd limit?)"); return; }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->want_out = 1;
    c->t_start = now_ns();
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        kill_conn(c, connect_err(errno));
        return;
    }
    if (mode == M_STORM) {
        /* Over loopback the connection is usually established before connect() returns (it
         * still says EINPROGRESS): sending the request now saves a writable wake-up, SO_ERROR
         * and an epoll_ctl per connection, CPU that the storm's client would spend on itself. */
        ssize_t w = send(c->fd, req, req_len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != ENOTCONN) { kill_conn(c, connect_err(errno)); return; }
        if (w >= 0) {
            c->state = HANDSHAKE;
            c->hs_sent = (int)w;
            c->want_out = w < req_len;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void set_open(conn_t *c) {
    c->state = OPEN;
    n_conn--;
    n_open++;
    want_out(c, 0);
}

static void send_request(conn_t *c);

/* -L: one step of the TLS handshake; then the upgrade request (or, with -r, data) */
static void tls_step(conn_t *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        if (raw) { set_open(c); return; }
        c->state = HANDSHAKE;
        send_request(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) want_out(c, 0);
    else if (e == SSL_ERROR_WANT_WRITE) want_out(c, 1);
    else kill_conn(c, "TLS handshake failed");
}

static void on_writable(conn_t *c) {
    if (c->state == OPEN) { flush(c); return; }
    if (c->state == TLS_HS) { tls_step(c); return; }
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { kill_conn(c, connect_err(err)); return; }
        if (tls_ctx) {
            if (!(c->ssl = SSL_new(tls_ctx)) || !SSL_set_fd(c->ssl, c->fd)) { kill_conn(c, "SSL_new"); return; }
            SSL_set_connect_state(c->ssl);
            c->state = TLS_HS;
            tls_step(c);
            return;
        }
        if (raw) { set_open(c); return; }
        c->state = HANDSHAKE;
    }
    send_request(c);
}

static void send_request(conn_t *c) {
    while (c->hs_sent < req_len) {
        ssize_t w = io_send(c, req + c->hs_sent, req_len - c->hs_sent);
        if (w < 0) { if (errno == EAGAIN) want_out(c, 1); else kill_conn(c, "send handshake"); return; }
        c->hs_sent += w;
    }
    want_out(c, 0);
}

/* The request's key is RFC 6455's sample nonce, so the answer is the RFC's sample accept value. */
static int accept_ok(char *head, char *end) {
    static const char name[] = "\r\nSec-WebSocket-Accept:";
    char keep = *end, *v;
    *end = 0; /* the search must not run into frame bytes after the head */
    v = strcasestr(head, name);
    *end = keep;
    if (!v) return 0;
    for (v += sizeof name - 1; *v == ' ' || *v == '\t'; v++) {}
    if (strncmp(v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28)) return 0;
    for (v += 28; *v == ' ' || *v == '\t'; v++) {}
    return *v == '\r';
}

/* -z: read the server's Sec-WebSocket-Extensions answer (NUL-terminated head); 0 = reject */
static int negotiate(conn_t *c) {
    int cli_bits = 15, cli_nct = 0;
    char *h = c->hs, *v = NULL;
    while ((h = strstr(h, "\r\n")) && h[2] != '\r') {
        h += 2;
        if (!strncasecmp(h, "Sec-WebSocket-Extensions:", 25)) { v = h + 25; break; }
    }
    if (v) {
        char val[200];
        size_t n = strcspn(v, "\r");
        if (n >= sizeof val) return 0;
        memcpy(val, v, n);
        val[n] = 0;
        char *save, *tok = strtok_r(val, ";", &save);
        for (int first = 1; tok; tok = strtok_r(NULL, ";", &save), first = 0) {
            while (*tok == ' ' || *tok == '\t') tok++;
            char *e = tok + strlen(tok);
            while (e > tok && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
            if (first) { if (strcmp(tok, "permessage-deflate")) return 0; continue; }
            if (!strcmp(tok, "server_no_context_takeover")) c->srv_nct = 1;
            else if (!strcmp(tok, "client_no_context_takeover")) cli_nct = 1;
            else if (!strncmp(tok, "client_max_window_bits=", 23)) cli_bits = atoi(tok + 23);
            else if (strncmp(tok, "server_max_window_bits=", 23)) return 0; /* any server window inflates with 15 */
        }
        if (cli_bits < 8 || cli_bits > 15) return 0;
        c->pmd = 1;
        if (!(c->zs = get_zset(cli_bits, cli_nct))) return 0;
        if (!ext_answer[0]) { /* for the report: keep it a valid JSON string */
            size_t skip = strspn(v, " \t"), len = n - skip < sizeof ext_answer ? n - skip : sizeof ext_answer - 1;
            memcpy(ext_answer, v + skip, len);
            for (char *q = ext_answer; *q; q++) if (*q == '"' || *q == '\\' || (unsigned char)*q < 32) *q = '?';
        }
    } else c->zs = get_zset(0, 0);
    return inflateInit2(&c->zi, -15) == Z_OK;
}

/* one read; returns 1 if it took data (over TLS more may be buffered already) */
static int readable_once(conn_t *c, uint64_t t) {
    if (c->state == TLS_HS) { tls_step(c); return 0; }
    if (c->state == HANDSHAKE) {
        ssize_t r = io_recv(c, c->hs + c->hs_len, sizeof c->hs - 1 - c->hs_len);
        if (r <= 0) {
            if (r == 0 || errno != EAGAIN)
                kill_conn(c, r ? errno == ECONNRESET ? "connection reset" : "handshake recv" : "handshake EOF");
            return 0;
        }
        c->hs_len += r;
        c->hs[c->hs_len] = 0;
        char *e = strstr(c->hs, "\r\n\r\n");
        if (!e) { if (c->hs_len >= (int)sizeof c->hs - 1) kill_conn(c, "handshake too long"); return 1; }
        if (strncmp(c->hs, "HTTP/1.1 101", 12)) { kill_conn(c, "handshake not 101"); return 0; }
        if (!accept_ok(c->hs, e)) { kill_conn(c, "handshake: wrong Sec-WebSocket-Accept"); return 0; }
        if (zmode) {
            *e = 0; /* the head only: data may follow it */
            if (!negotiate(c)) { kill_conn(c, "bad permessage-deflate answer"); return 0; }
        }
        set_open(c);
        t = now_ns();
        if (mode == M_STORM) {
            send_msgs(c, 1, t);
            flush(c);
            if (c->state != OPEN) return 0;
        }
        size_t extra = c->hs_len - (e + 4 - c->hs);
        if (extra) parse(c, (uint8_t *)e + 4, extra, t);
        return 1;
    }
    if (c->state != OPEN) return 0;
    ssize_t r = io_recv(c, rbuf, sizeof rbuf);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            kill_conn(c, r ? errno == ECONNRESET ? "connection reset" : "recv" : "EOF");
        return 0;
    }
    t = now_ns(); /* per-recv timestamp */
    int got = parse(c, rbuf, r, t);
    if (got > 0 && mode == M_ECHO) { /* keep the window full: re-send what came back */
        send_msgs(c, window - c->inflight, t);
        flush(c);
    }
    return c->state == OPEN;
}

static void on_readable(conn_t *c, uint64_t t) {
    /* plain TCP: one recv per wake-up (level-triggered: the rest wakes us again); TLS: records
     * read ahead into OpenSSL's buffer do not make the socket readable, so read them all now */
    while (readable_once(c, t) && c->ssl) {}
}

static int stdin_cmd(void); /* idle mode */

static void loop_once(int ms) {
    struct epoll_event ev[512];
    int n = epoll_wait(epfd, ev, 512, ms);
    uint64_t t = now_ns();
    for (int i = 0; i < n; i++) {
        conn_t *c = ev[i].data.ptr;
        if (!c) { stdin_cmd(); continue; }
        if (c->state == DEAD) continue;
        if (ev[i].events & EPOLLOUT || (c->state == CONNECTING && ev[i].events & (EPOLLERR | EPOLLHUP))) on_writable(c);
        if (c->state != DEAD && ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, t);
    }
}

static void connect_all(void) {
    uint64_t t0 = now_ns();
    while (n_open + n_dead < nconns && (now_ns() - t0) / 1e9 < conn_timeout) {
        while (next_conn < nconns && n_conn < hs_conc) start_connect(&conns[next_conn++]);
        loop_once(20);
    }
}

/* idle mode: one stdin command per line */
static int stdin_cmd(void) {
    char line[64];
    ssize_t r = read(0, line, sizeof line - 1);
    if (r <= 0) exit(0);
    line[r] = 0;
    if (strncmp(line, "echo", 4)) return 0;
    uint64_t t = now_ns(), want = n_open, dead0 = n_dead;
    n_got = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN) { conns[i].got = 0; send_msgs(&conns[i], 1, t); flush(&conns[i]); }
    while (n_got + (n_dead - dead0) < want && (now_ns() - t) / 1e9 < 60) loop_once(20);
    printf("{\"phase\":\"done\",\"echoed\":%llu,\"open\":%d,\"bad\":%llu,\"pings\":%llu,\"secs\":%.3f}\n",
           (unsigned long long)n_got, n_open, (unsigned long long)n_bad, (unsigned long long)n_pings, (now_ns() - t) / 1e9);
    return 1;
}

/* fanout: one broadcast round.  Waits until every connection has the payload (the sender too when
 * the server sends it back to the sender: detected in the warm-up round).  Returns 1 on success. */
static int self_copy = 1;
static int fanout_round(int seq, int sender, double timeout) {
    char pre[16];
    int k = snprintf(pre, sizeof pre, "%d:", seq);
    bc_len = msize < (size_t)k ? (size_t)k : msize;
    memcpy(bc, pre, k);
    for (size_t i = k; i < bc_len; i++) bc[i] = 'a' + (seq + i) % 26;
    uint8_t pl[420];
    memcpy(pl, "broadcast:", 10);
    memcpy(pl + 10, bc, bc_len);
    for (int i = 0; i < nconns; i++) conns[i].got = 0;
    uint64_t want = nconns - !self_copy;
    n_got = 0;
    bc_first = bc_last = 0;
    bc_t0 = now_ns();
    queue_x(&conns[sender], 1, pl, 10 + bc_len);
    flush(&conns[sender]);
    while (n_got < want && (now_ns() - bc_t0) / 1e9 < timeout && n_open == nconns) loop_once(5);
    if (n_got == want) return 1;
    if (self_copy && n_got == want - 1 && !conns[sender].got && n_open == nconns) {
        self_copy = 0; /* this server does not send the broadcast back to its sender */
        return 1;
    }
    return 0;
}

static int run_fanout(void) {
    static uint64_t lasts[100000], firsts[100000];
    int rounds = 0, seq = 0, ok = 0;
    /* warm-up rounds: also make sure the server has registered every client */
    for (int w = 0; w < 5 && !ok; w++) ok = fanout_round(seq, seq % nconns, 2.0), seq++;
    if (!ok) {
        printf("{\"error\":\"warm-up broadcast reached only %llu of %d clients (%s)\",\"open\":%d}\n",
               (unsigned long long)n_got, nconns, last_err, n_open);
        return 1;
    }
    if (!self_copy) fanout_round(seq++, 0, 2.0); /* confirm with another sender */
    uint64_t end = now_ns() + (uint64_t)(duration * 1e9);
    while ((now_ns() < end || rounds < 3) && rounds < 100000) {
        if (!fanout_round(seq, (int)((seq * 7919ull) % nconns), 10.0)) {
            printf("{\"error\":\"round %d: only %llu of %d clients got the broadcast (%s)\",\"open\":%d}\n",
                   rounds, (unsigned long long)n_got, nconns, last_err, n_open);
            return 1;
        }
        seq++;
        lasts[rounds] = bc_last;
        firsts[rounds++] = bc_first;
    }
    memset(hist, 0, sizeof hist);
    for (int i = 0; i < rounds; i++) hist[bucket(lasts[i])]++;
    double l50 = pct_us(hist, rounds, .5), l90 = pct_us(hist, rounds, .9), lmax = pct_us(hist, rounds, 1);
    memset(hist, 0, sizeof hist);
    for (int i = 0; i < rounds; i++) hist[bucket(firsts[i])]++;
    printf("{\"conns\":%d,\"rounds\":%d,\"self_copy\":%d,\"last_p50_us\":%.1f,\"last_p90_us\":%.1f,"
           "\"last_max_us\":%.1f,\"first_p50_us\":%.1f,\"bad\":%llu,\"errors\":%d}\n",
           nconns, rounds, self_copy, l50, l90, lmax, pct_us(hist, rounds, .5), (unsigned long long)n_bad, n_dead);
    return n_bad || n_dead;
}

/* ------------------------------------------------------------------ storm */
static int *free_slots, n_free;
static uint64_t n_done, n_fail, n_warm_fail;
static struct { const char *why; uint64_t n; } reasons[16];
static int n_reasons;

static void storm_free(conn_t *c) { free_slots[n_free++] = (int)(c - conns); }

/* called by kill_conn: every connection that dies in a storm is a failure, with its reason */
static void storm_failed(const char *why) {
    int i;
    if (measuring) n_fail++; else n_warm_fail++;
    for (i = 0; i < n_reasons && strcmp(reasons[i].why, why); i++) {}
    if (i == n_reasons && n_reasons >= 15) { /* more kinds than fit: lumped, never dropped */
        why = "other";
        for (i = 0; i < n_reasons && strcmp(reasons[i].why, why); i++) {}
    }
    if (i == n_reasons) reasons[n_reasons++].why = why;
    reasons[i].n++;
}

static void storm_close_frame(conn_t *c) {
    if (!c->got) { kill_conn(c, "server closed before the echo"); return; }
    if (c->len == 1) { kill_conn(c, "bad close frame"); return; }
    /* Abortive close (RST, no FIN).  The client closes after the server's close frame, often
     * before the server closed its side, so an orderly close would leave the client's end in
     * TIME_WAIT for 60 s, each holding one of ~28,000 ephemeral ports: a full run opens several
     * times that many connections within minutes, and connect() would start failing with
     * EADDRNOTAVAIL (or reusing ports slowly) because of the client, not the server.  The
     * WebSocket close handshake is complete at this point, so nothing is lost. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
    n_open--;
    if (measuring) { n_done++; hist[bucket(c->t_echo - c->t_start)]++; hist_n++; }
    storm_free(c);
}

/* runs `total` connections, at most nconns at once, until every one has finished or failed */
static void storm_phase(int total) {
    int started = 0;
    uint64_t next_check = now_ns();
    while (started < total || n_conn + n_open > 0) {
        /* slots freed during an epoll batch are reused only here, after it: a later event
         * of that batch can never reach the new connection */
        while (started < total && n_free) {
            conn_t *c = &conns[free_slots[--n_free]];
            uint64_t *ts = c->ts;
            memset(c, 0, sizeof *c);
            c->ts = ts;
            started++;
            start_connect(c);
        }
        loop_once(20);
        uint64_t t = now_ns();
        if (t < next_check) continue;
        next_check = t + 100000000ull;
        for (int i = 0; i < nconns; i++)
            if (conns[i].state != DEAD && t - conns[i].t_start > conn_timeout * 1e9)
                kill_conn(&conns[i], "timeout");
    }
}

static int run_storm(void) {
    free_slots = malloc(sizeof(int) * nconns);
    for (int i = nconns - 1; i >= 0; i--) { conns[i].state = DEAD; storm_free(&conns[i]); }
    storm_phase(storm_warm);
    measuring = 1;
    printf("{\"phase\":\"measure\"}\n");
    double cpu0 = cpu_s();
    uint64_t t0 = now_ns();
    storm_phase(storm_n);
    double secs = (now_ns() - t0) / 1e9, cpu = cpu_s() - cpu0;
    measuring = 0;
    printf("{\"phase\":\"end\"}\n");
    printf("{\"mode\":\"storm\",\"conns\":%d,\"concurrency\":%d,\"warmup\":%d,\"completed\":%llu,\"failures\":%llu,"
           "\"warmup_failures\":%llu,\"secs\":%.3f,\"conn_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
           "\"client_cpu\":%.3f,\"client_us_per_conn\":%.1f,\"fail_reasons\":{",
           storm_n, nconns, storm_warm, (unsigned long long)n_done, (unsigned long long)n_fail,
           (unsigned long long)n_warm_fail, secs, n_done / secs, pct_us(hist, hist_n, .5), pct_us(hist, hist_n, .99),
           pct_us(hist, hist_n, 1), cpu / secs, n_done ? cpu * 1e6 / n_done : 0.0);
    for (int i = 0; i < n_reasons; i++)
        printf("%s\"%s\":%llu", i ? "," : "", reasons[i].why, (unsigned long long)reasons[i].n);
    printf("},\"last_err\":\"%s\"}\n", n_fail + n_warm_fail ? last_err : "");
    return n_fail || n_warm_fail || n_done != (uint64_t)storm_n;
}

/* -z: NPOOL JSON documents of exactly msize bytes, like a feed of events: the same keys in every
 * message, ids, timestamps, prices and text that change (splitmix64 from the seed) */
static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void make_pool(void) {
    static const char *names[] = {"ada", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret"};
    static const char *words[] = {"order", "filled", "partial", "price", "moved", "alert", "user", "joined",
                                  "left", "typing", "market", "update", "stream", "delta", "snapshot", "ack"};
    static const char *kinds[] = {"trade", "quote", "chat", "presence"};
    char *b = malloc(msize + 512);
    rng_state = seed;
    uint64_t ts = 1700000000000ull;
    for (int k = 0; k < NPOOL; k++) {
        size_t n = 0;
        ts += rnd() % 5000;
        n += sprintf(b + n, "{\"type\":\"%s\",\"seq\":%d,\"id\":\"%016llx\",\"ts\":%llu,\"user\":{\"id\":%u,"
                     "\"name\":\"%s\",\"online\":%s},\"room\":\"room-%u\",\"items\":[",
                     kinds[rnd() % 4], k, (unsigned long long)rnd(), (unsigned long long)ts,
                     (unsigned)(rnd() % 1000000), names[rnd() % 8], rnd() & 1 ? "true" : "false",
                     (unsigned)(rnd() % 50));
        for (int i = 0; n + 140 < msize; i++) {
            uint64_t r = rnd();
            n += sprintf(b + n, "%s{\"sku\":\"SKU-%05u\",\"qty\":%u,\"price\":%u.%02u,\"side\":\"%s\"}",
                         i ? "," : "", (unsigned)(r % 100000), (unsigned)(r >> 20) % 100,
                         (unsigned)(r >> 28) % 5000, (unsigned)(r >> 44) % 100, r >> 63 ? "buy" : "sell");
        }
        n += sprintf(b + n, "],\"note\":\"");
        /* words up to the exact size; the closing "} takes 2 bytes */
        while (n + 2 < msize) {
            const char *w = words[rnd() % 16];
            size_t room = msize - 2 - n, wl = strlen(w);
            if (wl + 1 > room) { memset(b + n, 'x', room); n += room; break; }
            n += sprintf(b + n, "%s ", w);
        }
        if (n + 2 > msize) n = msize >= 2 ? msize - 2 : 0; /* tiny -s: a truncated (still ASCII) text */
        memcpy(b + n, "\"}", msize - n < 2 ? msize - n : 2);
        pool[k] = malloc(msize + 1);
        memcpy(pool[k], b, msize);
    }
    free(b);
}

int main(int argc, char **argv) {
    int o, c_set = 0, w_set = 0;
    while ((o = getopt(argc, argv, "H:p:P:m:rc:w:s:td:W:C:T:n:zS:L")) != -1) switch (o) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'P': path = optarg; break;
        case 'm':
            mode = !strcmp(optarg, "idle") ? M_IDLE : !strcmp(optarg, "fanout") ? M_FANOUT
                 : !strcmp(optarg, "storm") ? M_STORM : M_ECHO;
            break;
        case 'r': raw = 1; break;
        case 'c': nconns = atoi(optarg); c_set = 1; break;
        case 'w': window = atoi(optarg); break;
        case 's': msize = strtoull(optarg, NULL, 10); break;
        case 't': text = 1; break;
        case 'd': duration = atof(optarg); break;
        case 'W': warmup = atof(optarg); w_set = 1; break;
        case 'n': storm_n = atoi(optarg); break;
        case 'C': hs_conc = atoi(optarg); break;
        case 'T': conn_timeout = atof(optarg); break;
        case 'z': zmode = text = 1; break;
        case 'S': seed = strtoul(optarg, NULL, 10); break;
        case 'L': tls_ctx = SSL_CTX_new(TLS_client_method()); break;
        default:
            fprintf(stderr, "usage: wsload -p port [-H host] [-P path] [-m echo|idle|fanout|storm] [-r] [-c conns] "
                            "[-w in-flight] [-s size] [-t] [-d secs] [-W warmup] [-C handshakes-in-flight] [-T secs] [-z] [-S seed] [-L]\n"
                            "  storm: -n connections (5000), -c at once (500), -W warm-up connections (200), "
                            "-T seconds one connection may take (120)\n");
            return 2;
        }
    if (!port || nconns < 1) return 2;
    if (mode == M_STORM) {
        /* the storm's one message is 32 B of text (the workload's definition) */
        if (raw) { fprintf(stderr, "storm needs the upgrade: no -r\n"); return 2; }
        if (!c_set) nconns = 500;
        storm_warm = w_set ? (int)warmup : 200;
        msize = 32;
        text = 1;
        if (storm_n < 1 || storm_warm < 0) return 2;
    }
    if (mode != M_ECHO) window = 1;
    if (mode == M_FANOUT) { text = 1; if (msize > 380) msize = 380; }
    if (window < 1) window = 1;
    if (zmode && (raw || mode == M_FANOUT || mode == M_STORM)) { fprintf(stderr, "-z: echo or idle mode over WebSocket only\n"); return 2; }
    if (tls_ctx) {
        if (mode == M_FANOUT || mode == M_STORM) { fprintf(stderr, "-L: echo or idle mode only\n"); return 2; }
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_read_ahead(tls_ctx, 1);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl); /* the runner raised it already; take whatever is left */
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    req_len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                       path, host, port,
                       zmode ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    if (zmode) make_pool();
    /* the echo frame, its plain and masked payload, and a stream of back-to-back copies */
    uint8_t h[14];
    size_t hl = put_hdr(h, text ? 1 : 2, msize);
    flen = hl + msize;
    plain = malloc(msize + 1);
    masked_ref = malloc(msize + 1);
    for (size_t i = 0; i < msize; i++) {
        plain[i] = 'a' + (i * 7 + i / 26) % 26; /* printable ASCII: valid UTF-8 */
        masked_ref[i] = plain[i] ^ KEY[i & 3];
    }
    size_t copies = window;
    while (copies * flen < (256u << 10)) copies++;
    stream_len = copies * flen;
    stream = malloc(stream_len);
    for (size_t i = 0; i < copies; i++) {
        memcpy(stream + i * flen, h, hl);
        memcpy(stream + i * flen + hl, masked_ref, msize);
    }
    epfd = epoll_create1(0);
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].ts = malloc(sizeof(uint64_t) * window);

    if (mode == M_STORM) return run_storm();
    uint64_t tc = now_ns();
    connect_all();
    double csecs = (now_ns() - tc) / 1e9;
    if (mode == M_IDLE) {
        printf("{\"phase\":\"ready\",\"open\":%d,\"failed\":%d,\"connect_secs\":%.3f,\"last_err\":\"%s\"}\n", n_open,
               n_dead, csecs, last_err);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
        for (;;) loop_once(1000); /* keeps answering pings until stdin closes */
    }
    if (n_open < nconns) {
        printf("{\"error\":\"only %d of %d connections opened (%s)\"}\n", n_open, nconns, last_err);
        return 1;
    }
    if (mode == M_FANOUT) return run_fanout();

    uint64_t t = now_ns();
    for (int i = 0; i < nconns; i++) { send_msgs(&conns[i], window, t); flush(&conns[i]); }
    while ((now_ns() - t) / 1e9 < warmup && n_open == nconns) loop_once(20);
    measuring = 1;
    printf("{\"phase\":\"measure\"}\n"); /* the runner samples server CPU between these two lines */
    double cpu0 = cpu_s();
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9);
    while (now_ns() < end && n_open == nconns) loop_once(20);
    uint64_t t1 = now_ns();
    double cpu1 = cpu_s(), secs = (t1 - t0) / 1e9;
    measuring = 0;
    printf("{\"phase\":\"end\"}\n");
    printf("{\"conns\":%d,\"window\":%d,\"size\":%zu,\"secs\":%.3f,\"msgs\":%llu,\"msg_per_s\":%.1f,\"mb_per_s\":%.3f,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"client_cpu\":%.3f,\"errors\":%d,"
           "\"bad\":%llu,\"pings\":%llu,\"last_err\":\"%s\",\"wire_per_msg\":%.1f,\"wire_up_per_msg\":%.1f,"
           "\"deflate\":%d,\"ext\":\"%s\"}\n",
           nconns, window, msize, secs, (unsigned long long)n_msgs, n_msgs / secs, n_bytes / secs / 1e6,
           pct_us(hist, hist_n, .5), pct_us(hist, hist_n, .9), pct_us(hist, hist_n, .99), pct_us(hist, hist_n, 1),
           (cpu1 - cpu0) / secs, n_dead, (unsigned long long)n_bad, (unsigned long long)n_pings, last_err,
           n_msgs ? (double)n_wire_in / n_msgs : 0.0, n_msgs && zmode ? (double)n_wire_out / n_msgs : 0.0,
           zmode && conns[0].pmd, ext_answer);
    return (n_dead || n_bad) ? 1 : 0;
}
