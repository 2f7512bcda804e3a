"""What the build's forkserver imports before forking workers (preprocess.driver.worker_context),
and nothing else imports: the server asks to die with the build that started it (its workers
die with it in turn), so a killed build leaves no process behind; then it loads the warmed
build code every worker forks with."""

from .lifetime import die_with_parent

die_with_parent()

from . import worker_warmup  # noqa: E402, F401  (after the request: a slow import must not outlive the build)
