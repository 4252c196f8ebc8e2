"""``berth local``: the whole platform on this machine, started and stopped with one command each.

``up`` starts what is missing (the local AWS, i.e. moto serving S3 and SQS, the gateway with every function
behind it, the host worker and lb-runtime), creates the bucket and queues, applies migrations, and reuses
whatever already answers; ``down`` stops only the processes ``up`` started, by the PIDs it recorded.
PostgreSQL, Redis and Docker are the machine's own services (``infrastructure/local/bootstrap.sh`` installs
and starts them): they are checked here, never started or stopped.

The package, one job per module: ``settings`` (what ``berth local`` reads), ``processes`` (pidfiles,
spawning, recognising and stopping process groups), ``probes`` (what answers where), ``aws`` (the local
AWS resources and moto), ``stack`` (up, down and status). The names below are the package's interface; the
modules are reached through it.
"""

from cli.local_stack.aws import ensure_aws_resources
from cli.local_stack.settings import LocalStackSettings
from cli.local_stack.stack import child_environment, down, run_local_aws, status, up

__all__ = ["LocalStackSettings", "child_environment", "down", "ensure_aws_resources", "run_local_aws", "status", "up"]
