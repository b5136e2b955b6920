{% test unique_combination(model, columns) %}
{#- No two rows share the values of `columns` (a composite key); nulls count as values. -#}
select {{ columns | join(', ') }}, count(*) as rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
