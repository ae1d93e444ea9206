"""Simulators of the systems outside this project's control (docs/contracts.md).

Only what we cannot run for real is simulated: Banksia's Scout API and its Kafka
notifications, the MWA data_files web service and the client's callback
endpoint. Each simulator is a small aiohttp service started as a command by the
stack launcher (``python -m devstack.sim.<name> ...``):

* :mod:`devstack.sim.banksia` -- the archive's one shared state, the Kafka
  publisher and the control endpoint (``SIM_CONTROL_URL``);
* :mod:`devstack.sim.scout_node` -- one Scout API node, a thin forwarder to
  banksia, so that several nodes behind HAProxy share one archive;
* :mod:`devstack.sim.data_files` -- the observation -> file list service;
* :mod:`devstack.sim.callback` -- the client's callback receiver.

Every service answers ``GET /healthz`` with 200 for readiness, logs to stderr,
prints one ``listening on http://HOST:PORT`` line on stdout once bound (so
``--port 0`` is usable) and exits cleanly on SIGTERM.
"""
