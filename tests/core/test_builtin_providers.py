"""Core's own providers pass the same contract suites a third party's must."""

import pickle

from agex.testing import SerializerContract, StorageContract


class TestMemoryStorage(StorageContract):
    provider = "memory"

    def test_instances_do_not_share_data(self, tmp_path) -> None:
        first, second = self.create(tmp_path), self.create(tmp_path)
        first.put_many({"k": b"v"})
        assert second.get("k") is None


class TestCloudpickleSerializer(SerializerContract):
    provider = "cloudpickle"

    def test_carries_code_by_value(self, serializer) -> None:
        offset = 10

        def add(x):
            return x + offset

        data = serializer.dumps({"f": add, "g": lambda y: y * 2})
        back = serializer.loads(data)
        assert back["f"](1) == 11
        assert back["g"](4) == 8

    def test_output_is_plain_pickle(self, serializer) -> None:
        assert pickle.loads(serializer.dumps([1, "a"])) == [1, "a"]
