"""A tuning cluster: KerasTuner's distributed mode, configured by its own environment variables.

Every process runs the same `python -m tuning.search ...` command; the variables give it a role:

    KERASTUNER_TUNER_ID     "chief" for the process that holds the oracle, any other unique name
                            ("tuner0", "tuner1", ...) for a worker
    KERASTUNER_ORACLE_IP    the chief's address (the chief listens on it)
    KERASTUNER_ORACLE_PORT  the chief's port

The chief prepares the data, serves the oracle over gRPC until every worker that took a trial has
been told to stop, then prints the table and writes best.flags: it alone knows every trial. Workers
wait for the chief (so they never read shards it is still writing), ask it for trials, train them
and report. keras-tuner reads the variables itself (keras_tuner/src/distribute/); this module only
checks them first, waits for the chief, and runs the chief's server (keras-tuner's own
`oracle_chief.start_server` polls every 20 s once the search is over and never stops the server).
Imports no TensorFlow: search.py checks the variables before anything slow.
"""

from __future__ import annotations

import dataclasses
import os
import time

ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
ENV = (ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT)

# How long a worker waits for the chief to come up (it prepares the data first); keras-tuner's
# own client waits up to an hour per call (oracle_client.TIMEOUT).
CHIEF_WAIT_SECONDS = 60 * 60
# How often the chief checks whether the search is over.
POLL_SECONDS = 0.5
# What the server gets to answer the workers' last calls once the search is over.
SHUTDOWN_GRACE_SECONDS = 5


class ClusterError(Exception):
    """The cluster's variables are incomplete or wrong, or the chief cannot be reached."""


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's place in a tuning cluster."""

    tuner_id: str
    ip: str
    port: int

    @property
    def is_chief(self) -> bool:
        # keras-tuner's own test (distribute/utils.py is_chief_oracle): "chief" anywhere in the ID.
        return "chief" in self.tuner_id

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip  # an IPv6 address needs brackets
        return f"{host}:{self.port}"

    def describe(self) -> str:
        return (f"chief: serving the oracle on {self.address}" if self.is_chief
                else f"worker {self.tuner_id}: trials from the chief at {self.address}")


def role_from_env(environ=os.environ) -> Role | None:
    """The role the variables give, or None when none is set (a search in one process). Some but
    not all of them set is an error here, not a silent one-process search (keras-tuner only
    looks at the others when KERASTUNER_ORACLE_IP is set)."""
    present = {name: environ[name].strip() for name in ENV if environ.get(name, "").strip()}
    if not present:
        return None
    missing = [name for name in ENV if name not in present]
    if missing:
        given = ", ".join(f"{name}={present[name]}" for name in present)
        raise ClusterError(
            f"distributed tuning needs all of {', '.join(ENV)}; {given} set but {', '.join(missing)} "
            f"not (the chief: {ENV_TUNER_ID}=chief; workers: {ENV_TUNER_ID}=tuner0, tuner1, ...; "
            "every process: the chief's IP and port); unset them all for a search in one process")
    port = present[ENV_ORACLE_PORT]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"{ENV_ORACLE_PORT}={port}: give a port number from 1 to 65535")
    return Role(present[ENV_TUNER_ID], present[ENV_ORACLE_IP], int(port))


def wait_for_chief(role: Role, timeout: float = CHIEF_WAIT_SECONDS) -> None:
    """Blocks until the chief's gRPC server accepts connections: it starts serving only once its
    data and search space are ready."""
    import grpc

    print(f"worker {role.tuner_id}: waiting for the chief at {role.address}", flush=True)
    with grpc.insecure_channel(role.address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ClusterError(f"no chief answered at {role.address} within {timeout:.0f} s: start "
                               f"one with {ENV_TUNER_ID}=chief and the same address") from None


def serve(oracle, role: Role) -> None:
    """Serves `oracle` to the workers until the search is over: a worker has been told to stop
    (max_trials reached) and no worker has a trial running or is yet to be told."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    # One thread, as keras-tuner's own server: not every oracle method takes the oracle's lock.
    # No SO_REUSEPORT (gRPC's default on Linux): a second chief on the same port would bind too,
    # and the workers' calls would be shared between two oracles.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(role.address)
    except RuntimeError as error:  # grpcio >= 1.55 raises where older versions returned 0
        raise ClusterError(f"the chief cannot listen on {role.address}: {error}") from None
    if not bound:
        raise ClusterError(f"the chief cannot listen on {role.address} (in use, or not this machine's address)")
    server.start()
    print(f"{role.describe()}; waiting for workers", flush=True)
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(POLL_SECONDS)
    finally:
        server.stop(SHUTDOWN_GRACE_SECONDS).wait()
