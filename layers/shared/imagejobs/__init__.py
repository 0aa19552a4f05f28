"""imagejobs: the shared domain package deployed as the Lambda layer.

Job model and validation, the provider client, the job store, the output
copier and configuration. AWS clients and HTTP sessions are passed in, so the
same logic runs in Lambda, in the local stack and in tests.
"""

__version__ = "0.1.0"
