-- One view over every dataset partition of the lake table mined_negatives; `dataset` is the hive partition.
select * from {{ lake_table('mined_negatives') }}
