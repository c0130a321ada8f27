"""The product's URL conf plus POST /api/v1/_bench/bare: a plain ModelSerializer CreateAPIView
over a simple existing table (audit entries: no foreign key checked, no unique constraint), with
DRF's default authentication and permission classes. It is the ceiling bench/api.py measures
POST /runs against: one authenticated request that validates a small body and inserts one row."""

from django.urls import path
from rest_framework import generics, serializers

from audit.models import AuditEntry
from sparkops.urls import urlpatterns as product_urlpatterns


class BareSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "at", "channel", "action", "object_type", "object_id", "object_repr", "changes"]
        read_only_fields = ["id", "at"]


class BareCreate(generics.CreateAPIView):
    queryset = AuditEntry.objects.all()
    serializer_class = BareSerializer


urlpatterns = [path("api/v1/_bench/bare", BareCreate.as_view()), *product_urlpatterns]
