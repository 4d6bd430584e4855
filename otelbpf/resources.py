"""Resource detection: who a traced process is, as OpenTelemetry resource attributes.

One Resource per traced process: service.name (the process's own OTEL_SERVICE_NAME, else the
service.name in its OTEL_RESOURCE_ATTRIBUTES, else its executable name), process.* facts from
psutil, host.name, and the agent's OTEL_RESOURCE_ATTRIBUTES for every process. The command's
arguments are left out unless the user asks for them: they carry tokens and passwords as
often as file names (`curl -H 'Authorization: Bearer ...'`, `--password=...`). Processes that
exit before they are looked at fall back to what the kernel event carried (pid and comm).
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import unquote

import psutil
from opentelemetry.sdk.environment_variables import OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv._incubating.attributes.host_attributes import HOST_NAME
from opentelemetry.semconv._incubating.attributes.process_attributes import (
    PROCESS_COMMAND,
    PROCESS_COMMAND_LINE,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PID,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

AttributeMap = dict[str, str | int]

# A process caught inside execve already shows its new /proc/<pid>/exe, but its argv and
# environment are published a moment later; under load that window lasts milliseconds. A user
# process with an empty command line is read again, this many times, before it is believed.
EXEC_SETTLE_TRIES = 20
EXEC_SETTLE_PAUSE = 0.002  # seconds between tries: at most 40 ms, once per new process


def parse_resource_attributes(text: str | None) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES syntax: key1=value1,key2=value2, values percent-encoded."""
    attributes: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    return attributes


class ResourceDetector:
    def __init__(
        self, environ: dict[str, str] | None = None, keep_command_line: bool = False
    ) -> None:
        env = os.environ if environ is None else environ
        self._keep_command_line = keep_command_line
        self._env = env
        self._agent_attributes = parse_resource_attributes(env.get(OTEL_RESOURCE_ATTRIBUTES))
        # the agent's own service name names the agent, never the processes it traces
        self._agent_service_name = self._agent_attributes.pop(SERVICE_NAME, None)
        self._host_name = socket.gethostname()

    def for_process(self, pid: int, comm: str = "") -> Resource:
        # a host.name the user gives (the node's name in a container) beats the kernel's
        attributes: AttributeMap = {HOST_NAME: self._host_name, **self._agent_attributes}
        attributes[PROCESS_PID] = pid
        exe, name, cmdline, environ = self._read_process(pid, comm)
        own = parse_resource_attributes(environ.get(OTEL_RESOURCE_ATTRIBUTES))
        attributes.update(own)
        service_name = environ.get(OTEL_SERVICE_NAME) or own.get(SERVICE_NAME) or name or comm
        attributes[SERVICE_NAME] = service_name or f"pid-{pid}"
        if name:
            attributes[PROCESS_EXECUTABLE_NAME] = name
        if exe:
            attributes[PROCESS_EXECUTABLE_PATH] = exe
        if cmdline:
            attributes[PROCESS_COMMAND] = cmdline[0]
            if self._keep_command_line:
                attributes[PROCESS_COMMAND_LINE] = " ".join(cmdline)
        return Resource(attributes)

    @staticmethod
    def _read_process(pid: int, comm: str) -> tuple[str, str, list[str], dict[str, str]]:
        """exe, name, argv and environment of a live process; the event's comm if it is gone."""
        tries_left = EXEC_SETTLE_TRIES
        while True:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    exe = process.exe()
                    name = os.path.basename(exe) if exe else process.name()
                    cmdline = process.cmdline()
                    try:
                        environ = process.environ()
                    except (psutil.AccessDenied, OSError):
                        environ = {}
            except (psutil.Error, OSError):
                return "", comm, [], {}
            # kernel threads have no exe and no argv; only a user process can be mid-exec
            tries_left -= 1
            if cmdline or not exe or not tries_left:
                return exe, name, cmdline, environ
            time.sleep(EXEC_SETTLE_PAUSE)

    def for_agent(self) -> Resource:
        attributes: AttributeMap = {HOST_NAME: self._host_name, **self._agent_attributes}
        attributes[SERVICE_NAME] = (
            self._env.get(OTEL_SERVICE_NAME) or self._agent_service_name or "otelbpf"
        )
        attributes[PROCESS_PID] = os.getpid()
        return Resource(attributes)
