def pytest_configure(config):
    config.addinivalue_line("markers", "bench: runs `manage.py bench` scenarios (real workers; about a minute)")
