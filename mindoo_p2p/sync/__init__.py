"""The sync protocol: what two nodes say to each other once a transport connects them.

Sans I/O except the driver, in the shape of h11: the state machines decide, the driver moves
frames.

- :mod:`.messages`: the wire messages and their strict, bounded codec (`ProtocolViolation`).
- :mod:`.auth`: the per-tenant handshake (blinded tenant, proofs bound to both peer ids).
- :mod:`.protocol`: reconcile, fetch and push one tenant (`SyncInitiator`, `SyncResponder`)
  against the `SyncStore` protocol (a facade: the parts live in the private ``_initiator``,
  ``_responder``, ``_session_api``, ``_session_report`` and ``_session_common`` modules).
- :mod:`.driver`: runs the handshake and the session over a framed stream, with time bounds
  (the only module here that awaits).
- :mod:`.tenant_adapter`: a node's `Tenant` as the protocol's `SyncStore` and
  `TenantAuthority`.

In-memory doubles of the collaborators (`MemorySyncStore`, `memory_frame_pair`) live in
:mod:`mindoo_p2p.testing.memory_sync`.
"""
