"""Test-session plumbing.

The JIT-policy workload (tests/test_jit_policy.py) compiles every kernel in a fresh
interpreter with the cache off: about 45 s of one core.  It starts as soon as its tests are
collected and runs beside the first tests; its fixture collects the output (or starts it
itself when this hook did not run).
"""

#: name -> (process, stdout file, stderr file) of work started at collection
BACKGROUND = {}


def pytest_collection_modifyitems(session, config, items):
    if config.getoption("collectonly"):
        return
    if any(getattr(item, "module", None) is not None
           and item.module.__name__.endswith("test_jit_policy")
           and "compiled" in getattr(item, "fixturenames", ()) for item in items):
        from test_jit_policy import start_workload
        BACKGROUND["jit_policy"] = start_workload()


def pytest_sessionfinish(session, exitstatus):
    for proc, out, err in BACKGROUND.values():   # not collected by a fixture (e.g. -x)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
        err.close()
    BACKGROUND.clear()
