"""Every asset is partitioned by dataset; partitions are added from the UI, the CLI or the sensor."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="dataset")
