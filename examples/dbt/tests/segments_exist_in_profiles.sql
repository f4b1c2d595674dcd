-- Every segment a customer is in exists in segment_profiles for the same segmentation and
-- model version: segment ids are only meaningful with their model version, since a retrain
-- may issue new ids. Rows returned are failures.
select distinct m.model_name, m.model_version, m.segment_id
from {{ source('segmentation', 'segment_membership') }} m
left join {{ source('segmentation', 'segment_profiles') }} p
    on p.model_name = m.model_name
   and p.model_version = m.model_version
   and p.segment_id = m.segment_id
where p.segment_id is null
