"""The shipped gunicorn settings (workers, keep-alive, logging) without the
provider's hooks, to serve bench/trivial_app.py under the same configuration."""

import os
import runpy

_shipped = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "gunicorn.conf.py"))
for _name in ("bind", "workers", "threads", "timeout", "graceful_timeout", "keepalive", "accesslog", "logger_class",
              "errorlog", "logconfig_dict", "forwarded_allow_ips"):
    if _name in _shipped:
        globals()[_name] = _shipped[_name]
