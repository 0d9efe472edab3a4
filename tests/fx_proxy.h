/* fx_proxy.h - a fault-injecting TCP relay between clients and servers, for
 * the torture harness and the safety tests.
 *
 * One forked process relays any number of links. A link listens on a free
 * loopback port and relays every connection it accepts to one target port
 * on 127.0.0.1 (a redis-server). Each link has a mode and a one-way delay
 * that can be changed while connections are open; a change is in force
 * when fx_proxy_set returns (the relay acknowledges it).
 *
 *   PASS       bytes flow both ways, each chunk held back delay_ms first.
 *   BLACKHOLE  nothing moves either way and no connection is accepted: a
 *              client's connect completes in the kernel's backlog, then
 *              its requests go unanswered, as behind a partition. Bytes
 *              already read wait in the relay; they flow again (late) once
 *              the link passes, as TCP retransmits after a partition heals.
 *   DROP_REPLIES  requests reach the server, replies are held: a one-way
 *              partition. The server acts on what the client then believes
 *              failed.
 *
 * fx_proxy_reset closes every connection of a link now with a TCP reset,
 * both towards the client and towards the server.
 *
 * The relay is started with PR_SET_PDEATHSIG, exits when its control socket
 * closes, and exits by itself after max_ms in any case; fx_proxy_stop kills
 * it by PID. Only loopback addresses are used.
 */
#ifndef FX_PROXY_H
#define FX_PROXY_H

#include <sys/types.h>

#define FX_PROXY_MAX_LINKS 64

enum { FX_LINK_PASS = 0, FX_LINK_BLACKHOLE = 1, FX_LINK_DROP_REPLIES = 2 };

typedef struct fx_proxy {
    pid_t pid; /* 0 when not running */
    int ctl;   /* our end of the control socket, -1 when closed */
    int n;
    int port[FX_PROXY_MAX_LINKS];   /* where link i listens */
    int target[FX_PROXY_MAX_LINKS]; /* where it relays to   */
} fx_proxy;

/* Start one relay process with n links (1..FX_PROXY_MAX_LINKS), link i
 * relaying to 127.0.0.1:targets[i], all in PASS with no delay. It exits by
 * itself after max_ms. 0, or -1 with a message on stderr (nothing left
 * running). */
int fx_proxy_start(fx_proxy *p, const int *targets, int n, int max_ms);
/* Set link i's mode and one-way delay (0..10000 ms). 0 once the relay has
 * applied it, -1 if it did not answer within 2 s or i is out of range. */
int fx_proxy_set(fx_proxy *p, int i, int mode, int delay_ms);
/* Reset every open connection of link i (RST both ways). 0 or -1. */
int fx_proxy_reset(fx_proxy *p, int i);
/* Connections relayed by link i since the start (accepted), or -1. */
long fx_proxy_accepted(fx_proxy *p, int i);
/* Kill the relay (SIGKILL by PID, reaped) and close the control socket.
 * Safe twice. */
void fx_proxy_stop(fx_proxy *p);

#endif
