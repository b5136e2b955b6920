{% test relationships_by(model, columns, to, fields=none) %}
{#- Every non-null combination of `columns` in the model exists as `fields` (default: the same
    names) in `to`: a composite foreign key, e.g. (dataset, query_id) -> stg_raw_triplets. -#}
{%- set fields = fields or columns -%}
select {% for c in columns %}child.{{ c }}{{ ", " if not loop.last }}{% endfor %}
from {{ model }} as child
left join {{ to }} as parent
  on {% for c in columns %}child.{{ c }} = parent.{{ fields[loop.index0] }}{{ " and " if not loop.last }}{% endfor %}
where {% for c in columns %}child.{{ c }} is not null{{ " and " if not loop.last }}{% endfor %}
  and parent.{{ fields[0] }} is null
{% endtest %}
