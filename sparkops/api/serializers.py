"""Serializer plumbing shared by the apps' APIs."""

import copy


class FieldsBuiltOnce:
    """A ModelSerializer whose fields are built from the model once per process, then copied for
    each use. DRF builds them afresh for every serializer (and a nested list's child) it makes,
    which is most of the cost of answering with a run and its steps; the fields depend only on the
    class, so a copy of the first build is the same. Put it before the serializer class."""

    def get_fields(self):
        cls = type(self)
        built = cls.__dict__.get("_fields_built")
        if built is None:  # two threads may both build it once: the same result
            built = super().get_fields()
            cls._fields_built = built
        return copy.deepcopy(built)
