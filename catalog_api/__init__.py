"""The catalogue's HTTP API: functions, their code, executions and invocations (Falcon)."""
