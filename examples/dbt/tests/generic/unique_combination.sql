{% test unique_combination(model, columns) %}
-- Rows whose combination of `columns` occurs more than once (a key made of several columns;
-- the same as dbt_utils.unique_combination_of_columns, without a package download).
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
