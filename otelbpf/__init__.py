"""otelbpf: eBPF agent that turns the requests processes serve and make into OpenTelemetry."""

__version__ = "0.1.0"
