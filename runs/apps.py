from django.apps import AppConfig


class RunsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "runs"
    verbose_name = "Tunix runs"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from runs import checks, worker

        # Before anything serves or works: a webhook target that is a literal private address
        # is a configuration error, not something to find out at the first delivery.
        checks.refuse_private_webhook_targets()
        checks.register()
        # Every qcluster worker process runs a reaper thread (see runs.worker).
        post_spawn.connect(worker.start_reaper, dispatch_uid="tunix-rt-reaper")
