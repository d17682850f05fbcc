"""The entry point agex loads for agex-host-http (group `agex`).

It will register the `http` host and the `agex serve` command; until those land it registers
nothing, so no provider is offered that does not work. Import only `agex` here: SDKs are
imported inside factories.
"""
