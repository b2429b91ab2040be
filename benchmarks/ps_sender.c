/*
 * ps_sender: the ingest benchmark's media sender (benchmarks/ingest.py compiles it with the
 * machine's gcc into a temporary directory; it is not part of the package).
 *
 *     ps_sender CLIP CONTROL_SOCKET
 *
 * CLIP is the capture's PS-over-RTP payloads, written once by ingest.py from
 * gbplatform.simulator.media.PsClip (complete frames from the first keyframe):
 *
 *     "GBPSCLP1"  u32 frames  { u32 packets  { u16 length  payload } }   (little endian)
 *
 * The device simulator (gbplatform/simulator/external.py) answers the platform's INVITEs
 * and tells us, over the Unix SOCK_SEQPACKET socket CONTROL_SOCKET, where each stream goes:
 *
 *     open KEY MODE HOST PORT SSRC PT     (+ the bound UDP / listening TCP socket for udp and
 *                                          tcp-passive, passed with SCM_RIGHTS)
 *     start KEY                           (the ACK: send)
 *     stop KEY                            (BYE)
 *
 * MODE is the device's role: udp; tcp-active (we connect to HOST:PORT: the platform's
 * TCP-PASSIVE); tcp-passive (the platform connects to the socket we were given: its
 * TCP-ACTIVE). Each stream replays the clip in a loop in real time, one frame (a burst of
 * ~15 RTP packets) every 40 ms as the capture's 25 fps, with its own SSRC (the offer's
 * y= line, GB/T 28181-2016 Annex F), continuous sequence numbers and timestamps (RFC 3550
 * §5.1, 3600 ticks of the 90 kHz clock per frame) and the marker on each frame's last packet.
 * UDP sends a frame with one sendmmsg(2); TCP uses RFC 4571 §2 framing (16-bit length before
 * each packet) and one writev(2) per frame. A TCP reader that falls behind gets whole frames
 * dropped (counted in "dropped", sequence numbers not advanced), as a live camera drops
 * frames rather than queueing them.
 *
 * SIGUSR1 prints the counters as one JSON line on stdout; SIGTERM/SIGINT print them and exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FRAME_NS 40000000LL /* 25 fps */
#define TS_STEP 3600u       /* 90 kHz / 25 fps */
#define MAX_CATCHUP 3       /* frames sent at once after a late wakeup; older ones are skipped */
#define MAX_PACKETS 256     /* per frame */
#define MAX_CONTROL 64

enum { M_UDP, M_TCP_CONNECT, M_TCP_LISTEN };
enum { EV_CONTROL_LISTEN = 1, EV_CONTROL, EV_STREAM_LISTEN, EV_STREAM };

struct packet { const uint8_t *data; uint16_t len; };
struct frame { struct packet *packets; int count; };

struct stream {
    int used, mode, started, running, connecting;
    char key[64];
    int fd, lfd;
    struct sockaddr_in dest;
    uint32_t ssrc, ts0;
    uint8_t pt;
    uint16_t seq;
    uint64_t n;     /* next frame of the endless loop */
    int64_t t0;     /* when frame 0 was due */
    uint8_t *pending; /* the unsent tail of a TCP frame */
    size_t pending_len, pending_off;
    int want_out;
};

static struct frame *frames;
static int nframes;
static struct stream *streams;
static int nstreams, cap_streams;
static int epfd;
static int control_fds[MAX_CONTROL];
static volatile sig_atomic_t report_due, quit;
static struct {
    unsigned long long frames, packets, bytes, dropped, errors, opened, closed;
} st;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) report_due = 1;
    else quit = 1;
}

static void report(void) {
    int running = 0;
    for (int i = 0; i < nstreams; i++) running += streams[i].used && streams[i].running;
    printf("{\"frames\": %llu, \"packets\": %llu, \"bytes\": %llu, \"dropped\": %llu, \"errors\": %llu, "
           "\"streams\": %d, \"opened\": %llu, \"closed\": %llu}\n",
           st.frames, st.packets, st.bytes, st.dropped, st.errors, running, st.opened, st.closed);
    fflush(stdout);
}

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void load_clip(const char *path) {
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) { perror(path); exit(2); }
    size_t size = (size_t)sb.st_size;
    const uint8_t *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); exit(2); }
    close(fd);
    if (size < 12 || memcmp(m, "GBPSCLP1", 8) != 0) { fprintf(stderr, "%s: not a clip file\n", path); exit(2); }
    nframes = (int)rd32(m + 8);
    frames = calloc((size_t)nframes, sizeof *frames);
    size_t pos = 12;
    for (int f = 0; f < nframes; f++) {
        if (pos + 4 > size) goto bad;
        int count = (int)rd32(m + pos);
        pos += 4;
        if (count < 1 || count > MAX_PACKETS) goto bad;
        frames[f].count = count;
        frames[f].packets = calloc((size_t)count, sizeof(struct packet));
        for (int i = 0; i < count; i++) {
            if (pos + 2 > size) goto bad;
            uint16_t len = (uint16_t)(m[pos] | m[pos + 1] << 8);
            pos += 2;
            if (pos + len > size) goto bad;
            frames[f].packets[i] = (struct packet){m + pos, len};
            pos += len;
        }
    }
    if (nframes < 1) goto bad;
    return;
bad:
    fprintf(stderr, "%s: truncated or malformed clip file\n", path);
    exit(2);
}

static void ep(int op, int fd, uint32_t events, int type, int index) {
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)type << 32 | (uint32_t)index};
    if (epoll_ctl(epfd, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) { perror("epoll_ctl"); st.errors++; }
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static struct stream *find(const char *key) {
    for (int i = 0; i < nstreams; i++)
        if (streams[i].used && strcmp(streams[i].key, key) == 0) return &streams[i];
    return NULL;
}

static void close_stream(struct stream *s) {
    if (s->fd >= 0) close(s->fd); /* closing removes it from the epoll set */
    if (s->lfd >= 0) close(s->lfd);
    free(s->pending);
    memset(s, 0, sizeof *s);
    s->fd = s->lfd = -1;
    st.closed++;
}

static void begin(struct stream *s) {
    if (s->mode != M_UDP) { /* a frame is one writev: nothing to gain from Nagle, only delay */
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    s->running = 1;
    s->t0 = now_ns();
    s->n = 0;
}

static void rtp_header(uint8_t *h, struct stream *s, int marker, uint32_t ts) {
    h[0] = 0x80; /* RFC 3550 §5.1: version 2, no padding, extension or CSRC */
    h[1] = (uint8_t)((marker ? 0x80 : 0) | (s->pt & 0x7f));
    h[2] = (uint8_t)(s->seq >> 8); h[3] = (uint8_t)s->seq;
    h[4] = (uint8_t)(ts >> 24); h[5] = (uint8_t)(ts >> 16); h[6] = (uint8_t)(ts >> 8); h[7] = (uint8_t)ts;
    h[8] = (uint8_t)(s->ssrc >> 24); h[9] = (uint8_t)(s->ssrc >> 16);
    h[10] = (uint8_t)(s->ssrc >> 8); h[11] = (uint8_t)s->ssrc;
}

static void stream_failed(struct stream *s, const char *what) {
    fprintf(stderr, "ps_sender: stream %s: %s: %s\n", s->key, what, strerror(errno));
    st.errors++;
    close_stream(s);
}

/* Returns 0, or -1 when the stream was closed. */
static int send_frame(struct stream *s) {
    static uint8_t hdr[MAX_PACKETS][14];
    static struct iovec iov[MAX_PACKETS * 2];
    static struct mmsghdr msgs[MAX_PACKETS];
    const struct frame *f = &frames[s->n % (uint64_t)nframes];
    uint32_t ts = s->ts0 + (uint32_t)(s->n * TS_STEP);
    if (s->mode == M_UDP) {
        size_t bytes = 0;
        for (int i = 0; i < f->count; i++) {
            rtp_header(hdr[i], s, i == f->count - 1, ts);
            s->seq++;
            iov[2 * i] = (struct iovec){hdr[i], 12};
            iov[2 * i + 1] = (struct iovec){(void *)f->packets[i].data, f->packets[i].len};
            msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov[2 * i], .msg_iovlen = 2};
            bytes += 12u + f->packets[i].len;
        }
        int done = 0;
        while (done < f->count) {
            int r = sendmmsg(s->fd, msgs + done, (unsigned)(f->count - done), 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                /* ECONNREFUSED: an ICMP port unreachable from an earlier datagram; the rest go on. */
                st.errors++;
                if (errno != ECONNREFUSED) fprintf(stderr, "ps_sender: %s: sendmmsg: %s\n", s->key, strerror(errno));
                break;
            }
            done += r;
        }
        st.packets += (unsigned)done;
        st.bytes += bytes;
        st.frames++;
        return 0;
    }
    if (s->pending_off < s->pending_len) {
        st.dropped++; /* the reader has not taken the last frame yet */
        return 0;
    }
    size_t total = 0;
    for (int i = 0; i < f->count; i++) {
        uint16_t len = (uint16_t)(12 + f->packets[i].len);
        hdr[i][0] = (uint8_t)(len >> 8); hdr[i][1] = (uint8_t)len; /* RFC 4571 §2 */
        rtp_header(hdr[i] + 2, s, i == f->count - 1, ts);
        s->seq++;
        iov[2 * i] = (struct iovec){hdr[i], 14};
        iov[2 * i + 1] = (struct iovec){(void *)f->packets[i].data, f->packets[i].len};
        total += 14u + f->packets[i].len;
    }
    ssize_t w = writev(s->fd, iov, 2 * f->count);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        s->seq = (uint16_t)(s->seq - f->count);
        st.dropped++;
        return 0;
    }
    if (w < 0) { stream_failed(s, "writev"); return -1; }
    if ((size_t)w < total) { /* keep the tail so the RFC 4571 framing stays whole */
        size_t rest = total - (size_t)w, skip = (size_t)w, at = 0;
        s->pending = realloc(s->pending, rest);
        for (int i = 0; i < 2 * f->count; i++) {
            size_t l = iov[i].iov_len;
            if (skip >= l) { skip -= l; continue; }
            memcpy(s->pending + at, (uint8_t *)iov[i].iov_base + skip, l - skip);
            at += l - skip;
            skip = 0;
        }
        s->pending_len = rest;
        s->pending_off = 0;
        if (!s->want_out) {
            s->want_out = 1;
            ep(EPOLL_CTL_MOD, s->fd, EPOLLIN | EPOLLOUT, EV_STREAM, (int)(s - streams));
        }
    }
    st.packets += (unsigned)f->count;
    st.bytes += total;
    st.frames++;
    return 0;
}

static void flush_pending(struct stream *s) {
    while (s->pending_off < s->pending_len) {
        ssize_t w = write(s->fd, s->pending + s->pending_off, s->pending_len - s->pending_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            stream_failed(s, "write");
            return;
        }
        s->pending_off += (size_t)w;
    }
    s->want_out = 0;
    ep(EPOLL_CTL_MOD, s->fd, EPOLLIN, EV_STREAM, (int)(s - streams));
}

static struct stream *new_stream(void) {
    for (int i = 0; i < nstreams; i++)
        if (!streams[i].used) return &streams[i];
    if (nstreams == cap_streams) {
        cap_streams = cap_streams ? 2 * cap_streams : 64;
        streams = realloc(streams, (size_t)cap_streams * sizeof *streams);
    }
    struct stream *s = &streams[nstreams++];
    memset(s, 0, sizeof *s);
    s->fd = s->lfd = -1;
    return s;
}

static void start_connect(struct stream *s) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) { stream_failed(s, "socket"); return; }
    if (connect(s->fd, (struct sockaddr *)&s->dest, sizeof s->dest) < 0 && errno != EINPROGRESS) {
        stream_failed(s, "connect");
        return;
    }
    s->connecting = 1;
    ep(EPOLL_CTL_ADD, s->fd, EPOLLOUT, EV_STREAM, (int)(s - streams));
}

static void command(char *line, int fd) {
    char verb[16], key[64], mode[16], host[64];
    unsigned port, pt;
    unsigned long ssrc;
    line[strcspn(line, "\r\n")] = 0;
    if (sscanf(line, "%15s %63s", verb, key) != 2) goto bad;
    if (strcmp(verb, "open") == 0) {
        if (sscanf(line, "%*s %*s %15s %63s %u %lu %u", mode, host, &port, &ssrc, &pt) != 5) goto bad;
        struct stream *s = new_stream();
        s->used = 1;
        snprintf(s->key, sizeof s->key, "%s", key);
        s->mode = strcmp(mode, "udp") == 0 ? M_UDP : strcmp(mode, "tcp-active") == 0 ? M_TCP_CONNECT
                : strcmp(mode, "tcp-passive") == 0 ? M_TCP_LISTEN : -1;
        s->dest.sin_family = AF_INET;
        s->dest.sin_port = htons((uint16_t)port);
        s->ssrc = (uint32_t)ssrc;
        s->pt = (uint8_t)pt;
        /* RFC 3550 §5.1: random first sequence number and timestamp. */
        s->seq = (uint16_t)random();
        s->ts0 = (uint32_t)random();
        st.opened++;
        if (s->mode < 0 || inet_pton(AF_INET, host, &s->dest.sin_addr) != 1
            || (s->mode != M_TCP_CONNECT && fd < 0)) {
            fprintf(stderr, "ps_sender: unusable open: %s\n", line);
            if (fd >= 0) close(fd);
            st.errors++;
            close_stream(s);
            return;
        }
        if (s->mode == M_UDP) {
            s->fd = fd;
            int buf = 1 << 20;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
            if (connect(fd, (struct sockaddr *)&s->dest, sizeof s->dest) < 0) stream_failed(s, "connect udp");
        } else if (s->mode == M_TCP_LISTEN) {
            s->lfd = fd;
            set_nonblocking(fd);
            ep(EPOLL_CTL_ADD, fd, EPOLLIN, EV_STREAM_LISTEN, (int)(s - streams));
        }
        return;
    }
    if (fd >= 0) close(fd);
    struct stream *s = find(key);
    if (s == NULL) {
        fprintf(stderr, "ps_sender: %s: no stream %s\n", verb, key);
        return;
    }
    if (strcmp(verb, "start") == 0) {
        if (s->started) return;
        s->started = 1;
        if (s->mode == M_UDP) begin(s);
        else if (s->mode == M_TCP_CONNECT) start_connect(s);
        else if (s->fd >= 0) begin(s); /* the platform connected before the ACK */
    } else if (strcmp(verb, "stop") == 0) {
        close_stream(s);
    } else {
        goto bad;
    }
    return;
bad:
    fprintf(stderr, "ps_sender: bad control message: %s\n", line);
    st.errors++;
}

static void read_control(int slot) {
    char buf[512];
    union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cbuf;
    struct iovec iov = {buf, sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b, .msg_controllen = sizeof cbuf.b};
    ssize_t r = recvmsg(control_fds[slot], &msg, MSG_CMSG_CLOEXEC);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        close(control_fds[slot]); /* the simulator went away; its streams run on until stopped */
        control_fds[slot] = -1;
        return;
    }
    buf[r] = 0;
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    command(buf, fd);
}

static void stream_event(struct stream *s, uint32_t events) {
    if (!s->used) return;
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { errno = err; stream_failed(s, "connect"); return; }
        s->connecting = 0;
        ep(EPOLL_CTL_MOD, s->fd, EPOLLIN, EV_STREAM, (int)(s - streams));
        begin(s);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        char sink[4096]; /* a GB media receiver sends nothing over TCP; read and drop what comes */
        ssize_t r = read(s->fd, sink, sizeof sink);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            if (r < 0) st.errors++;
            close_stream(s); /* the platform hung up */
            return;
        }
    }
    if (events & EPOLLOUT) flush_pending(s);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CLIP CONTROL_SOCKET\n", argv[0]);
        return 2;
    }
    load_clip(argv[1]);
    srandom((unsigned)now_ns());
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CONTROL; i++) control_fds[i] = -1;

    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", argv[2]);
    unlink(argv[2]);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 16) < 0) {
        perror(argv[2]);
        return 2;
    }
    epfd = epoll_create1(0);
    ep(EPOLL_CTL_ADD, lfd, EPOLLIN, EV_CONTROL_LISTEN, 0);

    struct epoll_event events[256];
    while (!quit) {
        int64_t now = now_ns(), next = now + 1000000000LL;
        for (int i = 0; i < nstreams; i++) {
            struct stream *s = &streams[i];
            if (!s->used || !s->running) continue;
            uint64_t due = (uint64_t)((now - s->t0) / FRAME_NS) + 1;
            if (due > s->n + MAX_CATCHUP) { /* re-anchor rather than burst, as the Python sender does */
                s->t0 += (int64_t)(due - s->n - MAX_CATCHUP) * FRAME_NS;
                due = s->n + MAX_CATCHUP;
            }
            int closed = 0;
            while (s->n < due && !closed) {
                closed = send_frame(s) < 0;
                s->n++;
            }
            if (closed) continue;
            int64_t at = s->t0 + (int64_t)s->n * FRAME_NS;
            if (at < next) next = at;
        }
        if (report_due) { report_due = 0; report(); }
        int64_t wait = next - now_ns();
        int timeout = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            break;
        }
        for (int e = 0; e < n; e++) {
            int type = (int)(events[e].data.u64 >> 32), index = (int)(uint32_t)events[e].data.u64;
            if (type == EV_CONTROL_LISTEN) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0) continue;
                int slot = 0;
                while (slot < MAX_CONTROL && control_fds[slot] >= 0) slot++;
                if (slot == MAX_CONTROL) { fprintf(stderr, "ps_sender: too many simulators\n"); close(c); continue; }
                control_fds[slot] = c;
                ep(EPOLL_CTL_ADD, c, EPOLLIN, EV_CONTROL, slot);
            } else if (type == EV_CONTROL) {
                if (control_fds[index] >= 0) read_control(index);
            } else if (type == EV_STREAM_LISTEN) {
                struct stream *s = &streams[index];
                if (!s->used || s->lfd < 0) continue;
                int c = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0) continue;
                if (s->fd >= 0) { close(c); continue; } /* one connection per stream (RFC 4145 §4) */
                s->fd = c;
                ep(EPOLL_CTL_ADD, c, EPOLLIN, EV_STREAM, index);
                if (s->started) begin(s);
            } else if (type == EV_STREAM) {
                stream_event(&streams[index], events[e].events);
            }
        }
    }
    report();
    unlink(argv[2]);
    return 0;
}
