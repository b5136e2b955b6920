{% macro lake_glob(table) -%}
  {#- The files of a lake table; keep in step with external_location in models/staging/sources.yml. -#}
  {{ env_var('ARHN_HOME', 'data') }}/lake/{{ table }}/*/*.parquet
{%- endmacro %}


{% macro lake_table(table) %}
  {#- The lake table `table` (source('lake', table): every dataset partition, read by name).
      While the lake has no file for it yet, an empty relation with the columns sources.yml
      declares, so a `dbt build` on a partly materialized lake still builds (empty) models. -#}
  {%- set relation = source('lake', table) -%}
  {%- if not execute -%}
    {{ return(relation) }}
  {%- endif -%}
  {%- set pattern = lake_glob(table) -%}
  {%- set found = run_query("select count(*) from glob(" ~ dbt.string_literal(pattern) ~ ")").columns[0].values()[0] -%}
  {%- if found > 0 -%}
    {{ return(relation) }}
  {%- endif -%}
  {%- set node = graph.sources.values() | selectattr('source_name', 'equalto', 'lake') | selectattr('name', 'equalto', table) | first -%}
  {%- if not node.columns -%}
    {{ exceptions.raise_compiler_error("lake table " ~ table ~ " has no file under " ~ pattern ~ " and sources.yml declares no columns for it") }}
  {%- endif -%}
  {%- do log("lake table " ~ table ~ " has no file under " ~ pattern ~ " yet: stg_" ~ table ~ " is empty", info=True) -%}
  {%- set columns = [] -%}
  {%- for name, column in node.columns.items() -%}
    {%- do columns.append("cast(null as " ~ column.data_type ~ ") as " ~ adapter.quote(name)) -%}
  {%- endfor -%}
  {{ return("(select " ~ columns | join(", ") ~ " where false)") }}
{% endmacro %}


{% macro column_or_null(relation, column, data_type) %}
  {#- `column` of `relation` where it has one (columns added to the lake later), else a typed null. -#}
  {%- if execute and column in (adapter.get_columns_in_relation(relation) | map(attribute='name') | list) -%}
    {{ adapter.quote(column) }}
  {%- else -%}
    cast(null as {{ data_type }})
  {%- endif -%}
{% endmacro %}
