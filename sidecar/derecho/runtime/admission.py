"""Admitting joiners, at a member: a JOIN on the peer port is proposed by the leader (anyone
else points the joiner at the leader), and once the view that lists it is installed, the member
holding its connection sends WELCOME: the view and every member's address.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core.view import View, view_to_dict
from ..wire import frames
from ..wire.types import T
from .connection import FramedConnection

if TYPE_CHECKING:
    from .sidecar import Sidecar

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sc = sidecar
        # Joiners whose JOIN I (the leader) proposed: their connection, for the WELCOME.
        self.joiners: dict[int, FramedConnection] = {}
        # The view each joiner was admitted in (to welcome it again if its WELCOME was lost).
        self._admitted: dict[int, int] = {}

    def admitted(self, joined: tuple[int, ...], view: View) -> None:
        """The view that admits `joined` is installed: welcome those whose JOIN I hold."""
        for node in joined:
            self._admitted[node] = view.vid
            self.welcome(node, view)

    def on_join(self, conn: FramedConnection, header: dict[str, Any]) -> None:
        """A joiner's JOIN: the leader proposes it; anyone else points it at the leader."""
        node, address = header.get("node"), header.get("a")

        def answer(close: bool, **body: Any) -> None:
            conn.write([frames.encode({"t": T.JOIN_REPLY, **body})])
            if close:
                conn.close()

        if type(node) is not int or not 0 <= node < 1 << 16 or not isinstance(address, str):
            answer(True, ok=False, m="JOIN needs 'node' (an integer node id) and 'a' (its peer address HOST:PORT)")
            return
        if self.sc.halted or not self.sc.ready:
            why = f"halted: {self.sc.halted}" if self.sc.halted else "still starting"
            answer(True, ok=False, m=f"member {self.sc.node_id} cannot admit members now ({why}); ask another")
            return
        if self._admitted.get(node) == self.sc.view.vid and node not in self.sc.mesh.links:
            # Admitted in this very view, but the WELCOME was lost with the member that held its
            # JOIN (it failed mid-change): any member can welcome it; its state waits queued.
            self.sc.mesh.learn(node, address)
            self.joiners[node] = conn
            log.info("member %d, admitted in view %d, asks again; welcoming it", node, self.sc.view.vid)
            self.welcome(node, self.sc.view)
            return
        leader = self.sc.core.leader()
        if leader != self.sc.node_id:
            where = self.sc.mesh.address_of(leader)
            if where is None:
                answer(True, ok=False, m=f"the leader is member {leader}, whose address this member does not know")
            else:
                answer(True, leader=where)
            return
        refused = self.sc.core.request_join(node)
        if refused is not None:
            answer(True, ok=False, m=refused)
            return
        previous = self.joiners.get(node)
        if previous is not None and previous is not conn:
            previous.close()
        self.joiners[node] = conn
        self.sc.mesh.learn(node, address)
        log.info("member %d asks to join (from %s); proposing it for view %d", node, address, self.sc.view.vid + 1)
        answer(False, ok=True, vid=self.sc.view.vid)
        self.sc.schedule()

    def on_join_lost(self, conn: FramedConnection) -> None:
        for node, held in list(self.joiners.items()):
            if held is conn:
                del self.joiners[node]
                self.sc.core.cancel_join(node)

    def welcome(self, node: int, view: View) -> None:
        conn = self.joiners.pop(node, None)
        if conn is None or conn.closed:
            return
        addresses = {n: self.sc.mesh.address_of(n) for n in view.members}
        conn.write([frames.encode({"t": T.WELCOME, "view": view_to_dict(view), "a": addresses})])
        conn.close()
