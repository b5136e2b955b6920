-- One view over every dataset partition of the lake table answer_snippets; `dataset` is the hive partition.
select * from {{ lake_table('answer_snippets') }}
