"""The local stack: the whole pipeline on one machine (see docs/local-stack.md)."""

from imagejobs_tools.local.stack import LocalStack, LocalStackConfig, LocalStackError, StackInfo

__all__ = ["LocalStack", "LocalStackConfig", "LocalStackError", "StackInfo"]
