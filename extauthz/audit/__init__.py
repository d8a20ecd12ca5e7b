"""The tamper-evident decision log and its verification.

Modules, in the order a record meets them:

    settings    the ``audit`` section of aegis.yaml (imported by extauthz.config)
    entry       DecisionRecord / approval event → masked OPA-shaped JSON document (pure)
    chain       canonical bytes, hash chain, signed checkpoints (pure)
    keys        Ed25519 signing keys: keygen, load, fingerprints
    writer      DecisionLog: the sink; masks and seals, checkpoints, rotation, housekeeping
    appender    writes the sealed bytes in order from its own thread (compiled, or Python)
    verify      ``aegis audit verify``: chain, checkpoints and file continuity
    commands    the ``aegis audit`` subcommands

This ``__init__`` imports nothing: ``extauthz.config`` imports ``settings`` at startup.
"""
