"""The entry point agex loads for agex-host-modal (group `agex`).

It will register the `modal` host and the Modal Dict and Volume storages; until those land
it registers nothing, so no provider is offered that does not work. Import only `agex` here:
SDKs are imported inside factories.
"""
