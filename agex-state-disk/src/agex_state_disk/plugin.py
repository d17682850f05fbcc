"""The entry point agex loads for agex-state-disk (group `agex`).

It will register the `disk` storage; until those land it registers nothing, so no provider
is offered that does not work. Import only `agex` here: SDKs are imported inside factories.
"""
