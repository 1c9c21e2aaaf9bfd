"""The CLI's console without -v: Ray Data's execution lines and progress-bar notice stay off it, its warnings
and its session log file stay as they are."""

import logging

from ltx_batch.pipeline import _DropNotice, quiet_ray_data_console


def test_quiet_ray_data_console_keeps_warnings_and_the_file_log():
    import ray.data  # noqa: F401 - configures the ray.data loggers

    logger = logging.getLogger("ray.data")
    saved = [(h, h.level, list(h.filters)) for h in logger.handlers]
    try:
        for h in logger.handlers:  # as Ray Data configures it, whatever an earlier CLI run here did
            if isinstance(h, logging.StreamHandler):
                h.setLevel(logging.INFO)
                h.filters[:] = [f for f in h.filters if not isinstance(f, _DropNotice)]
        quiet_ray_data_console()
        quiet_ray_data_console()  # twice: one filter, not two
        consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
        files = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        assert consoles and files

        def record(level, msg):
            return logging.LogRecord("ray.data", level, __file__, 1, msg, None, None)

        for h in consoles:
            assert h.level == logging.WARNING
            assert not h.filter(record(logging.WARNING, "Progress bars disabled. To enable, set ..."))
            assert h.filter(record(logging.WARNING, "Cluster resources are not enough to run any task"))
        for (h, level, _) in saved:
            if h in files:
                assert h.level == level  # the session's ray-data.log still gets everything
        # exactly one notice filter on each console handler, however often the CLI calls it (an earlier CLI
        # run in this process may have called it already)
        for h in consoles:
            assert sum(isinstance(f, _DropNotice) for f in h.filters) == 1
    finally:
        for h, level, filters in saved:
            h.setLevel(level)
            h.filters[:] = filters


def test_verbose_keeps_the_s3_clients_signed_headers_out(tmp_path):
    """-v is debug logging for our lines; botocore's debug lines carry signed request headers."""
    from ltx_batch.cli import main as cli_main

    names = ("botocore", "aiobotocore", "urllib3")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.NOTSET)
        cli_main(["status", str(tmp_path)])  # no results there: exit 1, but the logging is set up
        assert all(logging.getLogger(n).level == logging.NOTSET for n in names)  # quiet by default anyway
        cli_main(["-v", "status", str(tmp_path)])
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.INFO for n in names)
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
