from django.contrib.auth import password_validation
from rest_framework import serializers

from sparkops.api.viewsets import ProjectField
from sparkops.roles import Role

from ..models import ApiKey, User


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name", "is_staff", "date_joined", "last_login"]
        read_only_fields = fields


class RegisterSerializer(serializers.Serializer):
    email = serializers.EmailField(help_text='Your login, e.g. "ada@example.com".')
    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")

    def validate_email(self, value: str) -> str:
        if User.objects.filter(email__iexact=value.strip()).exists():
            raise serializers.ValidationError("A user with this email already exists.")
        return value

    def validate(self, attrs: dict) -> dict:
        password_validation.validate_password(attrs["password"], User(email=attrs["email"], name=attrs["name"]))
        return attrs


class LoginSerializer(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    use_cookie = serializers.BooleanField(
        default=False, help_text="Set the refresh token as an HTTP-only cookie instead of returning it."
    )


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField(required=False, help_text="Absent when it was set as a cookie.")


class LoginResponseSerializer(TokenPairSerializer):
    user = UserSerializer()


class RefreshRequestSerializer(serializers.Serializer):
    refresh = serializers.CharField(required=False, help_text="Omit to use the refresh cookie.")
    use_cookie = serializers.BooleanField(default=False, help_text="Set the new refresh token as a cookie.")


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField(required=False, help_text="Omit to use the refresh cookie.")


class MeUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    current_password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    new_password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})

    def validate(self, attrs: dict) -> dict:
        if "new_password" in attrs and "current_password" not in attrs:
            raise serializers.ValidationError({"current_password": "Required to change the password."})
        return attrs


class MeUpdateResponseSerializer(serializers.Serializer):
    user = UserSerializer()
    access = serializers.CharField(required=False, help_text="New tokens, present after a password change.")
    refresh = serializers.CharField(required=False)


class ApiKeySerializer(serializers.ModelSerializer):
    project = ProjectField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "project",
            "name",
            "role",
            "prefix",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["id", "prefix", "revoked_at", "last_used_at", "created_by", "created_at"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown this once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
