/* Compiled RTP receive hot path: the same rules as the Python reference code.
 *
 * Every function here is the inner loop of a Python implementation that stays
 * the reference and the fallback (media/accel.py; GBP_PUREPYTHON=1 forces
 * it). Nothing here decides anything the Python code does not: when a packet
 * is not the plain common case, the loop stops and hands it back to Python.
 *
 * - recv_batch: a read pass of one UDP socket with recvmmsg(2), many datagrams
 *   per system call, instead of one recv/recvfrom call per datagram
 *   (media/receiver.py RtpUdpPort.doRead).
 * - ssrc_runs: the single port's routing key per datagram, the SSRC of the RTP
 *   fixed header (RFC 3550 §5.1), grouped into runs of one stream
 *   (media/receiver.py SharedRtpPort.datagram_received).
 * - ingest_run: RtpIngest.datagram + ReorderBuffer.push_item's in-order fast
 *   path + RtpIngest._deliver's PS collection, for the packets of a batch that
 *   are plain (V=2, no padding/extension/CSRC, RFC 3550 §5.1), of the stream's
 *   SSRC, in sequence with nothing waiting, of a payload type routed to PS and
 *   of the PS frame being collected (GB/T 28181-2022 §4.3.6: one timestamp per
 *   frame). Counters and jitter (RFC 3550 §6.4.1) are updated exactly as the
 *   Python code does.
 * - split_rfc4571: RFC 4571 §2 / RFC 2326 §10.12 de-framing of a TCP byte
 *   stream (media/framing.py Rfc4571Framer.feed_frames).
 *
 * Input from the network never makes these functions raise: they stop, skip
 * or report a count, as the Python code does.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Datagrams one recvmmsg call takes (the Linux UIO_MAXIOV limit is 1024). */
#define MMSG_VLEN 64

/* RFC 3550 §5.1: V=2, P=0, X=0, CC=0. */
#define PLAIN_V2 0x80
#define RTP_HEADER 12

static unsigned char *mmsg_buf = NULL;
static Py_ssize_t mmsg_slot = 0;

/* Interned attribute names. */
static PyObject *s_ssrc, *s_reorder, *s_waiting, *s_expected, *s_highest, *s_last_ts,
    *s_last_now, *s_fate, *s_fate_mask, *s_stats, *s_clock_rate, *s_received, *s_delivered,
    *s_jitter, *s_packets, *s_bytes, *s_last_packet_at, *s_first_packet_at, *s_ps_ts,
    *s_ps_chunks, *s_routes, *s_marker_pending;

/* -- recv_batch ------------------------------------------------------------ */

static PyObject *
address_tuple(const struct sockaddr_storage *sa)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        port = ntohs(a->sin_port);
    }
    else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        port = ntohs(a->sin6_port);
    }
    else {
        /* Not an IP socket: Python's recvfrom would give something else; say so plainly. */
        return Py_BuildValue("(si)", "", 0);
    }
    return Py_BuildValue("(si)", host, port);
}

static int
same_address(const struct sockaddr_storage *a, socklen_t alen,
             const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, max_count, size, addresses) -> (datagrams, address)\n\n"
"Read up to max_count datagrams of at most size bytes from the non-blocking\n"
"socket fd with recvmmsg(2). With addresses false, the second item is the\n"
"(host, port) of the first datagram (None when nothing was read); with\n"
"addresses true it is a list with one (host, port) per datagram. Stops at\n"
"EAGAIN and at ECONNREFUSED (an ICMP error of an earlier send, ignored as\n"
"Twisted does); another error raises OSError unless datagrams were read\n"
"already (the next pass meets it again).");

static PyObject *
recv_batch(PyObject *self, PyObject *args)
{
    int fd, want_all;
    Py_ssize_t max_count, size;
    if (!PyArg_ParseTuple(args, "innp", &fd, &max_count, &size, &want_all))
        return NULL;
    if (size <= 0 || size > 65536 || max_count <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be 1..65536 and max_count positive");
        return NULL;
    }
    if (mmsg_buf == NULL || mmsg_slot < size) {
        unsigned char *grown = PyMem_Realloc(mmsg_buf, (size_t)size * MMSG_VLEN);
        if (grown == NULL)
            return PyErr_NoMemory();
        mmsg_buf = grown;
        mmsg_slot = size;
    }
    struct mmsghdr msgs[MMSG_VLEN];
    struct iovec iov[MMSG_VLEN];
    struct sockaddr_storage names[MMSG_VLEN];

    PyObject *datagrams = PyList_New(0);
    if (datagrams == NULL)
        return NULL;
    PyObject *addrs = want_all ? PyList_New(0) : NULL;
    if (want_all && addrs == NULL) {
        Py_DECREF(datagrams);
        return NULL;
    }
    PyObject *first = NULL;
    PyObject *last_addr = NULL; /* borrowed from addrs */
    struct sockaddr_storage last_name;
    socklen_t last_len = 0;
    Py_ssize_t got = 0;

    while (got < max_count) {
        unsigned int vlen = (unsigned int)(max_count - got < MMSG_VLEN ? max_count - got : MMSG_VLEN);
        for (unsigned int i = 0; i < vlen; i++) {
            iov[i].iov_base = mmsg_buf + (size_t)i * (size_t)size;
            iov[i].iov_len = (size_t)size;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            /* The name costs a conversion only when someone wants it. */
            if (want_all || (got == 0 && i == 0)) {
                msgs[i].msg_hdr.msg_name = &names[i];
                msgs[i].msg_hdr.msg_namelen = sizeof names[i];
            }
            msgs[i].msg_len = 0;
        }
        int n = recvmmsg(fd, msgs, vlen, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED)
                break;
            if (got == 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            break;
        }
        for (int i = 0; i < n; i++) {
            PyObject *d = PyBytes_FromStringAndSize(
                (const char *)mmsg_buf + (size_t)i * (size_t)size, (Py_ssize_t)msgs[i].msg_len);
            if (d == NULL)
                goto fail;
            if (PyList_Append(datagrams, d) < 0) {
                Py_DECREF(d);
                goto fail;
            }
            Py_DECREF(d);
            if (want_all) {
                socklen_t nl = msgs[i].msg_hdr.msg_namelen;
                if (last_addr == NULL || !same_address(&names[i], nl, &last_name, last_len)) {
                    PyObject *a = address_tuple(&names[i]);
                    if (a == NULL)
                        goto fail;
                    if (PyList_Append(addrs, a) < 0) {
                        Py_DECREF(a);
                        goto fail;
                    }
                    Py_DECREF(a);
                    last_addr = a; /* the list holds it */
                    memcpy(&last_name, &names[i], nl <= sizeof last_name ? nl : sizeof last_name);
                    last_len = nl;
                }
                else if (PyList_Append(addrs, last_addr) < 0)
                    goto fail;
            }
            else if (first == NULL) {
                first = address_tuple(&names[i]);
                if (first == NULL)
                    goto fail;
            }
        }
        got += n;
        if ((unsigned int)n < vlen)
            break; /* the queue is empty: no failing call to find that out */
    }
    if (want_all)
        return Py_BuildValue("(NN)", datagrams, addrs);
    if (first == NULL)
        first = Py_NewRef(Py_None);
    return Py_BuildValue("(NN)", datagrams, first);
fail:
    Py_DECREF(datagrams);
    Py_XDECREF(addrs);
    Py_XDECREF(first);
    return NULL;
}

/* -- ssrc_runs --------------------------------------------------------------- */

PyDoc_STRVAR(ssrc_runs_doc,
"ssrc_runs(datagrams) -> list[(key, start, end)]\n\n"
"Consecutive datagrams grouped by routing key: the RTP SSRC (RFC 3550 §5.1,\n"
"octets 8-11), -1 for a datagram shorter than the 12-byte fixed header, -2\n"
"for RTCP multiplexed on the port (RFC 5761 §4: second octet 192-223).");

static PyObject *
ssrc_runs(PyObject *self, PyObject *arg)
{
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "ssrc_runs takes a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *runs = PyList_New(0);
    if (runs == NULL)
        return NULL;
    long long key = -3;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        long long k = -3;
        if (i < n) {
            PyObject *item = PyList_GET_ITEM(arg, i);
            char *p;
            Py_ssize_t len;
            if (PyBytes_AsStringAndSize(item, &p, &len) < 0) {
                Py_DECREF(runs);
                return NULL;
            }
            const unsigned char *u = (const unsigned char *)p;
            if (len < RTP_HEADER)
                k = -1;
            else if (u[1] >= 192 && u[1] < 224)
                k = -2;
            else
                k = ((long long)u[8] << 24) | (u[9] << 16) | (u[10] << 8) | u[11];
        }
        if (i == n || (i > 0 && k != key)) {
            if (i > 0) {
                PyObject *run = Py_BuildValue("(Lnn)", key, start, i);
                if (run == NULL || PyList_Append(runs, run) < 0) {
                    Py_XDECREF(run);
                    Py_DECREF(runs);
                    return NULL;
                }
                Py_DECREF(run);
            }
            start = i;
        }
        key = k;
    }
    return runs;
}

/* -- ingest_run ---------------------------------------------------------------- */

static int
get_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
set_ll(PyObject *obj, PyObject *name, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return r;
}

static int
set_double(PyObject *obj, PyObject *name, double value)
{
    PyObject *v = PyFloat_FromDouble(value);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return r;
}

PyDoc_STRVAR(ingest_run_doc,
"ingest_run(ingest, datagrams, start, now, ps_batch) -> (next, action)\n\n"
"Take datagrams[start:] into the RtpIngest while each is the common case:\n"
"plain RTP header of the stream's SSRC, the reorder buffer's expected\n"
"sequence number with nothing waiting, a payload type routed to PS and the\n"
"RTP timestamp of the PS frame being collected. action 0: stopped before\n"
"datagrams[next], which is not (Python handles it); 1: stopped after one\n"
"that ends a PS batch (marker bit, or ps_batch payloads collected), the\n"
"caller demuxes (and, for a marker, decides whether it ends the frame);\n"
"nothing is taken while ingest._marker_pending is set; 2: datagrams[next] starts a new frame, whose timestamp is\n"
"now ingest._ps_ts, the caller ends the previous frame and calls again.\n"
"Counters, jitter and reorder state end as RtpIngest.datagram would leave\n"
"them for the same datagrams at the same now.");

static PyObject *
ingest_run(PyObject *self, PyObject *args)
{
    PyObject *ingest, *batch;
    Py_ssize_t start, ps_batch;
    double now;
    if (!PyArg_ParseTuple(args, "OO!ndn", &ingest, &PyList_Type, &batch, &start, &now, &ps_batch))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    Py_ssize_t i = start;
    int demux = 0;
    PyObject *ssrc_obj = NULL, *reorder = NULL, *waiting = NULL, *expected_obj = NULL,
             *last_ts_obj = NULL, *fate = NULL, *rstats = NULL, *istats = NULL, *chunks = NULL,
             *routes = NULL, *first_at = NULL;
    PyObject *result = NULL;
    if (start < 0 || start >= n)
        return Py_BuildValue("(ni)", start, 0);
    /* The packet after a marker bit decides whether the stream's marker can be
     * trusted (RtpIngest._deliver): Python's path. */
    PyObject *pending = PyObject_GetAttr(ingest, s_marker_pending);
    if (pending == NULL)
        return NULL;
    int is_pending = PyObject_IsTrue(pending);
    Py_DECREF(pending);
    if (is_pending < 0)
        return NULL;
    if (is_pending)
        return Py_BuildValue("(ni)", start, 0);

    ssrc_obj = PyObject_GetAttr(ingest, s_ssrc);
    if (ssrc_obj == NULL)
        goto done;
    if (ssrc_obj == Py_None)
        goto stop; /* the first packet names the SSRC: Python's path */
    unsigned long long ssrc = PyLong_AsUnsignedLongLong(ssrc_obj);
    if (PyErr_Occurred()) {
        /* Not a 32-bit SSRC: no packet can match it; Python's path counts them. */
        PyErr_Clear();
        goto stop;
    }
    reorder = PyObject_GetAttr(ingest, s_reorder);
    if (reorder == NULL)
        goto done;
    waiting = PyObject_GetAttr(reorder, s_waiting);
    if (waiting == NULL)
        goto done;
    if (!PyDict_Check(waiting) || PyDict_GET_SIZE(waiting) != 0)
        goto stop; /* a gap is open: the reorder buffer's full path */
    expected_obj = PyObject_GetAttr(reorder, s_expected);
    if (expected_obj == NULL)
        goto done;
    if (expected_obj == Py_None)
        goto stop;
    long long expected = PyLong_AsLongLong(expected_obj);
    if (PyErr_Occurred())
        goto done;
    last_ts_obj = PyObject_GetAttr(reorder, s_last_ts);
    if (last_ts_obj == NULL)
        goto done;
    int have_last_ts = last_ts_obj != Py_None;
    long long last_ts = 0;
    if (have_last_ts) {
        last_ts = PyLong_AsLongLong(last_ts_obj);
        if (PyErr_Occurred())
            goto done;
    }
    PyObject *ln = PyObject_GetAttr(reorder, s_last_now);
    if (ln == NULL)
        goto done;
    double last_now = PyFloat_AsDouble(ln);
    Py_DECREF(ln);
    if (last_now == -1.0 && PyErr_Occurred())
        goto done;
    fate = PyObject_GetAttr(reorder, s_fate);
    if (fate == NULL)
        goto done;
    if (!PyByteArray_Check(fate))
        goto stop;
    long long fate_mask;
    if (get_ll(reorder, s_fate_mask, &fate_mask) < 0)
        goto done;
    if (fate_mask < 0 || fate_mask >= PyByteArray_GET_SIZE(fate))
        goto stop;
    rstats = PyObject_GetAttr(reorder, s_stats);
    if (rstats == NULL)
        goto done;
    long long clock_rate;
    if (get_ll(rstats, s_clock_rate, &clock_rate) < 0)
        goto done;
    PyObject *jt = PyObject_GetAttr(rstats, s_jitter);
    if (jt == NULL)
        goto done;
    double jitter = PyFloat_AsDouble(jt);
    Py_DECREF(jt);
    if (jitter == -1.0 && PyErr_Occurred())
        goto done;
    long long ps_ts;
    if (get_ll(ingest, s_ps_ts, &ps_ts) < 0)
        goto done;
    chunks = PyObject_GetAttr(ingest, s_ps_chunks);
    if (chunks == NULL)
        goto done;
    routes = PyObject_GetAttr(ingest, s_routes);
    if (routes == NULL)
        goto done;
    if (!PyList_Check(chunks) || !PyDict_Check(routes))
        goto stop;

    /* Payload type -> routed to PS (1), elsewhere or not yet routed (0); -1 unknown. */
    signed char ps_route[128];
    memset(ps_route, -1, sizeof ps_route);
    char *fate_buf = PyByteArray_AS_STRING(fate);
    long long bytes = 0;
    long long highest = -1;
    long long last_len = PyList_GET_SIZE(chunks);

    for (; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        if (!PyBytes_CheckExact(item))
            break;
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(item);
        if (len < RTP_HEADER || p[0] != PLAIN_V2)
            break;
        unsigned int b1 = p[1];
        long long seq = (p[2] << 8) | p[3];
        long long ts = ((long long)p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7];
        unsigned long long s = ((unsigned long long)p[8] << 24) | (p[9] << 16) | (p[10] << 8) | p[11];
        if (s != ssrc || seq != expected)
            break;
        unsigned int pt = b1 & 0x7F;
        if (ps_route[pt] < 0) {
            PyObject *key = PyLong_FromLong((long)pt);
            if (key == NULL)
                goto done_partial;
            PyObject *route = PyDict_GetItemWithError(routes, key);
            Py_DECREF(key);
            if (route == NULL && PyErr_Occurred())
                goto done_partial;
            ps_route[pt] = route == Py_None;
        }
        if (!ps_route[pt])
            break;
        if (ts != ps_ts) {
            /* A new timestamp: the frame collected so far is whole (GB/T 28181-2022
             * §4.3.6). The caller demuxes and ends it, then calls again for this
             * packet, whose timestamp is now the frame's. */
            PyObject *t = PyLong_FromLongLong(ts);
            if (t == NULL)
                goto done_partial;
            int r = PyObject_SetAttr(ingest, s_ps_ts, t);
            Py_DECREF(t);
            if (r < 0)
                goto done_partial;
            demux = 2;
            break;
        }
        /* Accepted. The payload first: if it cannot be allocated, nothing has changed. */
        PyObject *payload = PyBytes_FromStringAndSize((const char *)p + RTP_HEADER, len - RTP_HEADER);
        if (payload == NULL)
            goto done_partial;
        if (PyList_Append(chunks, payload) < 0) {
            Py_DECREF(payload);
            goto done_partial;
        }
        Py_DECREF(payload);
        /* RtpIngest.datagram's counters, ReorderBuffer.push_item's fast path. */
        if (have_last_ts) {
            long long d = ((ts - last_ts + 0x80000000LL) & 0xFFFFFFFFLL) - 0x80000000LL;
            double transit = (now - last_now) * (double)clock_rate - (double)d;
            jitter += (fabs(transit) - jitter) / 16;
        }
        last_now = now;
        last_ts = ts;
        have_last_ts = 1;
        fate_buf[seq & fate_mask] = 1; /* reorder._DELIVERED */
        expected = (seq + 1) & 0xFFFF;
        highest = seq;
        bytes += len;
        last_len++;
        if ((b1 & 0x80) || last_len >= ps_batch) {
            i++;
            demux = 1;
            break;
        }
    }
    goto write_back;

done_partial:
    /* An allocation failed mid-batch: keep the state of what was taken, then raise. */
    demux = -1;

write_back:
    if (i > start) {
        /* What the packets taken changed, written back in one go; the first
         * failure (out of memory) stops it with its exception. */
        PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL;
        if (demux < 0)
            PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        long long k = i - start;
        long long v;
        int ok =
            set_ll(reorder, s_expected, expected) == 0 &&
            set_ll(reorder, s_highest, highest) == 0 &&
            set_ll(reorder, s_last_ts, last_ts) == 0 &&
            set_double(reorder, s_last_now, last_now) == 0 &&
            set_double(rstats, s_jitter, jitter) == 0 &&
            get_ll(rstats, s_received, &v) == 0 && set_ll(rstats, s_received, v + k) == 0 &&
            get_ll(rstats, s_delivered, &v) == 0 && set_ll(rstats, s_delivered, v + k) == 0 &&
            (istats = PyObject_GetAttr(ingest, s_stats)) != NULL &&
            get_ll(istats, s_packets, &v) == 0 && set_ll(istats, s_packets, v + k) == 0 &&
            get_ll(istats, s_bytes, &v) == 0 && set_ll(istats, s_bytes, v + bytes) == 0 &&
            set_double(istats, s_last_packet_at, now) == 0 &&
            (first_at = PyObject_GetAttr(istats, s_first_packet_at)) != NULL &&
            (first_at != Py_None || set_double(istats, s_first_packet_at, now) == 0);
        if (demux < 0) {
            if (ok) {
                PyErr_Restore(exc_type, exc_value, exc_tb);
            }
            else {
                Py_XDECREF(exc_type);
                Py_XDECREF(exc_value);
                Py_XDECREF(exc_tb);
            }
            goto done;
        }
        if (!ok)
            goto done;
    }
    else if (demux < 0)
        goto done;
stop:
    result = Py_BuildValue("(ni)", i, demux);
done:
    Py_XDECREF(ssrc_obj);
    Py_XDECREF(reorder);
    Py_XDECREF(waiting);
    Py_XDECREF(expected_obj);
    Py_XDECREF(last_ts_obj);
    Py_XDECREF(fate);
    Py_XDECREF(rstats);
    Py_XDECREF(istats);
    Py_XDECREF(chunks);
    Py_XDECREF(routes);
    Py_XDECREF(first_at);
    return result;
}

/* -- split_rfc4571 ------------------------------------------------------------- */

PyDoc_STRVAR(split_rfc4571_doc,
"split_rfc4571(buffer) -> (packets, used, empty, bad_length)\n\n"
"The complete frames at the start of a TCP byte stream: RFC 4571 §2 (two-byte\n"
"length) or, when the first byte is '$', RTSP interleaved (RFC 2326 §10.12,\n"
"channel dropped). used: bytes consumed; empty: zero-length frames skipped;\n"
"bad_length: a declared length below the 12-byte RTP header that stopped the\n"
"split (the stream is desynchronised), else -1.");

static PyObject *
split_rfc4571(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len, pos = 0;
    long empty = 0, bad = -1;
    PyObject *packets = PyList_New(0);
    if (packets == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    while (end - pos >= 2) {
        Py_ssize_t length, s;
        if (buf[pos] == 0x24) {
            if (end - pos < 4)
                break;
            length = (buf[pos + 2] << 8) | buf[pos + 3];
            s = pos + 4;
        }
        else {
            length = (buf[pos] << 8) | buf[pos + 1];
            s = pos + 2;
        }
        if (length == 0) {
            empty++;
            pos = s;
            continue;
        }
        if (length < RTP_HEADER) {
            bad = (long)length;
            break;
        }
        if (end - s < length)
            break;
        PyObject *packet = PyBytes_FromStringAndSize((const char *)buf + s, length);
        if (packet == NULL || PyList_Append(packets, packet) < 0) {
            Py_XDECREF(packet);
            Py_DECREF(packets);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(packet);
        pos = s + length;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nnll)", packets, pos, empty, bad);
}

/* -- module ---------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"ssrc_runs", ssrc_runs, METH_O, ssrc_runs_doc},
    {"ingest_run", ingest_run, METH_VARARGS, ingest_run_doc},
    {"split_rfc4571", split_rfc4571, METH_O, split_rfc4571_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "media._fastpath",
    "Compiled RTP receive hot path (see media/accel.py).", -1, methods,
};

#define INTERN(var, text)                        \
    do {                                         \
        var = PyUnicode_InternFromString(text);  \
        if (var == NULL)                         \
            return NULL;                         \
    } while (0)

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    INTERN(s_ssrc, "ssrc");
    INTERN(s_reorder, "reorder");
    INTERN(s_waiting, "waiting");
    INTERN(s_expected, "_expected");
    INTERN(s_highest, "_highest");
    INTERN(s_last_ts, "_last_ts");
    INTERN(s_last_now, "_last_now");
    INTERN(s_fate, "_fate");
    INTERN(s_fate_mask, "_fate_mask");
    INTERN(s_stats, "stats");
    INTERN(s_clock_rate, "clock_rate");
    INTERN(s_received, "received");
    INTERN(s_delivered, "delivered");
    INTERN(s_jitter, "jitter");
    INTERN(s_packets, "packets");
    INTERN(s_bytes, "bytes");
    INTERN(s_last_packet_at, "last_packet_at");
    INTERN(s_first_packet_at, "first_packet_at");
    INTERN(s_ps_ts, "_ps_ts");
    INTERN(s_ps_chunks, "_ps_chunks");
    INTERN(s_routes, "_routes");
    INTERN(s_marker_pending, "_marker_pending");
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MMSG_VLEN", MMSG_VLEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
