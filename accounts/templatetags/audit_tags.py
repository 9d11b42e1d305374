from django import template

from accounts.audit import change_summary

register = template.Library()

register.filter("change_summary", change_summary)
