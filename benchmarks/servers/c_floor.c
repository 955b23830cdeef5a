/*
 * c_floor -- the floor for workload H (reconnect storm): the least work a WebSocket server can
 * do per connection.  Single-threaded epoll: accept, read the request head, answer 101 with the
 * Sec-WebSocket-Accept value (SHA-1 and base64 below, so that nothing but libc is needed), echo
 * small messages frame by frame, answer pings, answer the client's close frame and close.
 *
 * What it leaves out is what a real server must do, which is the point of a floor: no header
 * validation beyond finding the key, no UTF-8 check, no reassembly of fragments, no buffering of
 * output (a reply the kernel does not take at once closes the connection: fine for H's 32 B
 * messages, wrong for large pipelined ones, so the harness runs it in H only).
 *
 * --broadcast (the floor for workload E): a text message "broadcast:<payload>" is not echoed; its
 * <payload> goes to every upgraded connection instead, one send() per socket in a loop.
 *
 *   c_floor --port N [--broadcast]        (build: gcc -O2 -o c_floor c_floor.c)
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
#include <sys/socket.h>
#include <unistd.h>

enum { BACKLOG = 1024 }; /* H opens up to 500 connections at once: the queue must not drop SYNs */

typedef struct {
    int fd, upgraded, idx; /* idx: the place in `all` once upgraded */
    size_t have;
    uint8_t buf[4096];
} conn_t;

static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1(const uint8_t *m, size_t n, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint64_t bits = (uint64_t)n * 8;
    size_t total = (n + 8) / 64 * 64 + 64; /* message, 0x80, zeros, 64-bit length */
    for (size_t off = 0; off < total; off += 64) {
        uint8_t blk[64];
        uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 64; i++) {
            size_t k = off + i;
            blk[i] = k < n ? m[k] : k == n ? 0x80 : 0;
        }
        if (off + 64 == total)
            for (int i = 0; i < 8; i++) blk[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)blk[4 * i] << 24 | blk[4 * i + 1] << 16 | blk[4 * i + 2] << 8 | blk[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static size_t base64(const uint8_t *in, size_t n, char *out) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    return o;
}

static int epfd, broadcast;
static conn_t **all; /* the upgraded connections, for --broadcast */
static int n_all, cap_all;

static void drop(conn_t *c) {
    close(c->fd); /* also leaves the epoll set */
    if (c->upgraded) { /* the last one takes its place */
        all[c->idx] = all[--n_all];
        all[c->idx]->idx = c->idx;
    }
    free(c);
}

static int enlist(conn_t *c) {
    if (n_all == cap_all) {
        int cap = cap_all ? 2 * cap_all : 1024;
        conn_t **grown = realloc(all, sizeof *all * cap);
        if (!grown) return 0;
        all = grown, cap_all = cap;
    }
    c->idx = n_all;
    all[n_all++] = c;
    return 1;
}

/* --broadcast: the payload as one unmasked text frame to every upgraded connection */
static void fan_out(const uint8_t *p, size_t n) {
    uint8_t frame[4 + 4096];
    size_t h = n < 126 ? 2 : 4;
    frame[0] = 0x81;
    if (h == 2) frame[1] = (uint8_t)n;
    else frame[1] = 126, frame[2] = (uint8_t)(n >> 8), frame[3] = (uint8_t)n;
    memcpy(frame + h, p, n);
    for (int i = 0; i < n_all; i++) send(all[i]->fd, frame, h + n, MSG_NOSIGNAL); /* a floor: no retry */
}

/* all or nothing: see the top of the file */
static int put(conn_t *c, const void *p, size_t n) {
    return send(c->fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* answers the request head in c->buf; returns its length, 0 if incomplete, -1 to drop */
static long upgrade(conn_t *c) {
    static const char name[] = "\r\nSec-WebSocket-Key:", guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char *head = (char *)c->buf, *end, *k;
    c->buf[c->have] = 0; /* readable() keeps a byte free for it until the upgrade */
    if (!(end = strstr(head, "\r\n\r\n"))) return c->have >= sizeof c->buf - 1 ? -1 : 0;
    *end = 0;
    k = strcasestr(head, name);
    *end = '\r';
    if (!k) return -1;
    for (k += sizeof name - 1; *k == ' ' || *k == '\t'; k++) {}
    size_t klen = strcspn(k, " \t\r");
    if (!klen || klen > 64) return -1;
    uint8_t joined[64 + sizeof guid], digest[20];
    memcpy(joined, k, klen);
    memcpy(joined + klen, guid, sizeof guid - 1);
    sha1(joined, klen + sizeof guid - 1, digest);
    char resp[160];
    int n = sprintf(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: ");
    n += (int)base64(digest, 20, resp + n);
    memcpy(resp + n, "\r\n\r\n", 4);
    if (!put(c, resp, n + 4) || !enlist(c)) return -1;
    c->upgraded = 1;
    return end + 4 - head;
}

/* echoes every complete frame in c->buf from `at` on; returns where the first incomplete one
 * starts, -1 to drop (or after the close) */
static long frames(conn_t *c, size_t at) {
    for (;;) {
        uint8_t *f = c->buf + at;
        size_t left = c->have - at, hl = 2;
        if (left < 2) return at;
        uint64_t len = f[1] & 127;
        if (!(f[1] & 128)) return -1; /* client frames are masked */
        if (len == 126) hl = 4;
        else if (len == 127) hl = 10;
        if (left < hl + 4) return at;
        if (len == 126) len = f[2] << 8 | f[3];
        else if (len == 127) for (int i = 0; i < 8; i++) len = len << 8 | f[2 + i];
        if (len > sizeof c->buf - 14) return -1;
        if (left < hl + 4 + len) return at;
        uint8_t *key = f + hl, *pl = key + 4, op = f[0] & 15;
        for (uint64_t i = 0; i < len; i++) pl[i] ^= key[i & 3];
        /* the reply header is at most 4 bytes (len < 4096) and ends where the payload starts */
        size_t rh = len < 126 ? 2 : 4;
        uint8_t *r = pl - rh;
        r[0] = op == 9 ? 0x8A : f[0];
        if (rh == 2) r[1] = (uint8_t)len;
        else r[1] = 126, r[2] = (uint8_t)(len >> 8), r[3] = (uint8_t)len;
        if (broadcast && op == 1 && len >= 10 && !memcmp(pl, "broadcast:", 10)) fan_out(pl + 10, len - 10);
        else if (op != 10 && !put(c, r, rh + len)) return -1; /* pongs need no answer */
        if (op == 8) return -1; /* close answered with the client's code: the server closes first */
        at += hl + 4 + len;
    }
}

static void readable(conn_t *c) {
    ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have - !c->upgraded, 0);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) drop(c);
        return;
    }
    c->have += r;
    long used = 0;
    if (!c->upgraded && (used = upgrade(c)) <= 0) {
        if (used < 0) drop(c);
        return;
    }
    if ((used = frames(c, used)) < 0) { drop(c); return; }
    c->have -= used;
    memmove(c->buf, c->buf + used, c->have);
}

int main(int argc, char **argv) {
    int port = 0, one = 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--broadcast")) broadcast = 1;
    if (!port) { fprintf(stderr, "usage: c_floor --port N [--broadcast]\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, BACKLOG)) { perror("c_floor"); return 1; }
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
    printf("c_floor on ws://127.0.0.1:%d/\n", port);
    fflush(stdout);
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) { readable(evs[i].data.ptr); continue; }
            int fd;
            while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                conn_t *c = malloc(sizeof *c);
                if (!c) { close(fd); continue; }
                c->fd = fd, c->upgraded = 0, c->have = 0;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
            }
        }
    }
}
