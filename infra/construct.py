"""`Meterline`: the whole product as one construct, for `cdk deploy` (infra/app.py) or for embedding in
another CDK app:

    from infra.config import MeterlineProps
    from infra.construct import Meterline

    meterline = Meterline(stack, "Meterline", MeterlineProps(stage="prod", alarm_email="ops@example.com"))
"""

from __future__ import annotations

from aws_cdk import Tags
from constructs import Construct

from functions.routes import AUTHORIZER, REPORTS
from infra import nag
from infra.api import Api
from infra.config import BUNDLE_DEPENDENCIES_CONTEXT, MeterlineProps, bool_context
from infra.exports import EXPORTER_NAME, SENDER_NAME, Exports
from infra.lambdas import SharedLayers
from infra.monitoring import Monitoring
from infra.processing import BACKFILL_NAME, COMPACTOR_NAME, PROCESSOR_NAME, REPLAY_NAME, StreamProcessing
from infra.storage import Storage


class Meterline(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: MeterlineProps | None = None) -> None:
        super().__init__(scope, construct_id)
        self.props = props = props or MeterlineProps()
        Tags.of(self).add("meterline:stage", props.stage)

        self.layers = SharedLayers(
            self, "Layers", bundle_dependencies=bool_context(self.node, BUNDLE_DEPENDENCIES_CONTEXT, True)
        )
        self.storage = Storage(self, "Storage", props=props)
        tables = self.storage.tables
        self.api = Api(self, "Api", props=props, layers=self.layers, tables=tables)
        self.processing = StreamProcessing(self, "Processing", props=props, layers=self.layers, tables=tables)
        self.exports = Exports(self, "Exports", props=props, layers=self.layers, tables=tables,
                               reports=self.api.functions[REPORTS.name])
        self.monitoring = Monitoring(
            self, "Monitoring",
            props=props,
            http_api=self.api.http_api,
            functions={
                **{name: fn.function for name, fn in self.api.functions.items()},
                PROCESSOR_NAME: self.processing.function,
                COMPACTOR_NAME: self.processing.compactor.function,
                BACKFILL_NAME: self.processing.backfill.function,
                REPLAY_NAME: self.processing.replay.function,
                EXPORTER_NAME: self.exports.exporter.function,
                SENDER_NAME: self.exports.sender.function,
                **({AUTHORIZER.name: self.api.authorizer_function.function}
                   if self.api.authorizer_function is not None else {}),
            },
            stream_function=self.processing.function,
            dead_letter_queues={
                "StreamFailureQueue": self.processing.failure_queue,
                "ExportDeadLetterQueue": self.exports.export_dlq,
                "DeliveryDeadLetterQueue": self.exports.delivery_dlq,
            },
            tables={spec.logical_name: table for spec, table in tables.items()},
        )
        nag.acknowledge(self)

    @property
    def api_url(self) -> str:
        return self.api.url
