def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False, help="benchmark shapes at 1/4 resolution")
