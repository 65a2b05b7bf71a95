"""The worker side outside the sandbox: the publish activity and the worker runner."""
