from support.mountfixtures import mnt, mount_factory, pytest_generate_tests

__all__ = ["mnt", "mount_factory", "pytest_generate_tests"]
