"""The compactor's lag: the compactor function emits it (embedded metric format), and the stack alarms on it."""

from __future__ import annotations

from infra.lambdas import SERVICE_NAME
from infra.monitoring import COMPACTION_LAG_ALARM_SECONDS
from meterline.observability import METRICS_NAMESPACE
from meterline.services.compaction import LAG_METRIC
from tests.infra.synth import Synthesized


def test_an_alarm_watches_the_compaction_lag(dev: Synthesized) -> None:
    topic = dev.logical_id("Monitoring/AlarmTopic")
    alarm = dev.data["Resources"][dev.logical_id("Monitoring/CompactionLag")]
    props = alarm["Properties"]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    assert (props["Namespace"], props["MetricName"]) == (METRICS_NAMESPACE, LAG_METRIC)
    assert props["Dimensions"] == [{"Name": "service", "Value": SERVICE_NAME}]
    assert (props["Statistic"], props["Unit"], props["Period"]) == ("Maximum", "Seconds", 300)
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["Threshold"] == COMPACTION_LAG_ALARM_SECONDS and props["EvaluationPeriods"] == 2
    assert props["AlarmActions"] == [{"Ref": topic}] and props["OKActions"] == [{"Ref": topic}]
    # a compactor that stopped reports nothing: that must alarm too
    assert props["TreatMissingData"] == "breaching"
