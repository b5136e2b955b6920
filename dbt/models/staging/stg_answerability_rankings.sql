-- One view over every dataset partition of the lake table answerability_rankings; `dataset` is the hive partition.
select * from {{ lake_table('answerability_rankings') }}
