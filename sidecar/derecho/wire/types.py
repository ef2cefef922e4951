"""Frame types and header keys of the client protocol (Unix socket) and the peer protocol (TCP).

Headers use one-letter keys to keep per-frame encoding small; each is spelled out here.

Client -> sidecar
  SEND       r: [request ids], n: [payload sizes], sg, sh, x: {position: trace context}
             (a batch; payload = the payloads back to back)
  SUBSCRIBE  r: request id, sg, sh, p: replay  deliveries of that shard follow, in order; with
                                            p the member's retained history comes first
  VIEW       r: request id                  -> REPLY {vid, members}
  STATUS     r: request id                  -> REPLY (the status document)
Sidecar -> client
  RECEIPTS   r: [request ids], v: [versions], q: [seqs]
  DELIVER    sg, sh, v: [versions], q: [seqs], s: [sender node ids], n: [sizes], x: {pos: trace}
  REPLY      r: request id, b: body
  ERROR      r: request id or None, c: error code, m: message (what went wrong and what to do)
Peer <-> peer
  HELLO      node, group, proto             first frame both ways
  DATA       sg, sh, i: first index, m: [msg numbers], n: [sizes], x: {pos: trace}
  ROW        d: [column, value, ...], v: vid    a diff of the sender's SST row in view vid
  BEAT       (nothing)                      heartbeat: the sender is alive
DATA frames also carry v: the view id they belong to. HELLO also carries a: the sender's peer
address (HOST:PORT), so members learn joiners' addresses.
Joiner <-> member (a connection to any member's peer port whose first frame is JOIN)
  JOIN       node, group, proto, a: its peer address
  JOIN_REPLY ok: true (proposed; WELCOME follows once the view is installed) |
             leader: HOST:PORT (ask the leader instead) | m: why not now (ask again later)
  WELCOME    view: the view that admits it, a: {node id: HOST:PORT} of every member
Member -> joiner, over the peer link, for each shard the joiner is in
  STATE      sg, sh, v: [versions], s: [senders], n: [sizes]   a batch of the shard's history
  STATE_SNAPSHOT sg, sh, v: version; payload   an application snapshot the history continues from
  STATE_END  sg, sh, first: first version kept (-1 if none), complete: bool, count

Sidecar -> client, for apps that watch views
  VIEW_EVENT b: {vid, members, failed, reason}
Client -> sidecar
  WATCH_VIEWS r: request id                 VIEW_EVENT frames follow for each installed view
  LEAVE      r: request id                  the member leaves the group through a view change
                                            and exits 0 (like SIGTERM)
  SNAPSHOT   r: the SNAPSHOT_REQUEST's id, sg, sh; payload = the state, or e: why there is none
Sidecar -> client, for apps that subscribed with state hooks (SUBSCRIBE snap: true) or replay
  SNAPSHOT_REQUEST r, sg, sh, v: version    take a snapshot once every delivery before this is applied
  RESTORE    sg, sh, v: version; payload    the replayed history starts with this snapshot
"""

from __future__ import annotations

from enum import IntEnum

PROTOCOL_VERSION = 1


class T(IntEnum):
    SEND = 1
    SUBSCRIBE = 2
    VIEW = 3
    STATUS = 4
    WATCH_VIEWS = 5
    LEAVE = 6
    SNAPSHOT = 7
    RECEIPTS = 10
    DELIVER = 11
    REPLY = 12
    ERROR = 13
    VIEW_EVENT = 14
    SNAPSHOT_REQUEST = 15
    RESTORE = 16
    HELLO = 20
    DATA = 21
    ROW = 22
    BEAT = 23
    JOIN = 24
    JOIN_REPLY = 25
    WELCOME = 26
    STATE = 27
    STATE_END = 28
    STATE_SNAPSHOT = 29


class ErrorCode(IntEnum):
    BAD_FRAME = 1
    TOO_LARGE = 2
    BAD_REQUEST = 3
    UNKNOWN_SHARD = 4
    SLOW_CONSUMER = 5
    SHUTTING_DOWN = 6
    NOT_A_SENDER = 7
    HALTED = 8
