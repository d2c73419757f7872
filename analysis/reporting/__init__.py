"""Writing the report: sections that put the search and the scored models into one document, and the renderers.

Content and rendering are apart: the sections (:mod:`~analysis.reporting.search_sections`,
:mod:`~analysis.reporting.model_sections`, :mod:`~analysis.reporting.external_section`, the anchors, Grad-CAM and
the model cards) append blocks to a :class:`~analysis.reporting.document.Document`;
:mod:`~analysis.reporting.render` turns the one document into ``report.md`` and ``report.html`` (Jinja2 templates in
``templates/``), so both say the same. :mod:`~analysis.reporting.build` runs the whole report, and
:mod:`~analysis.reporting.tracking` logs it to MLflow. It may import :mod:`analysis.reading`,
:mod:`analysis.scoring`, :mod:`cxrmodels` and :mod:`search`.
"""
