"""A minimal XNAT data-type schema, enough for xnatpy to build its object model.

xnatpy reads the namespace prefixes with a regex on the ``<xs:schema ...>`` tag,
so the ``xs:`` prefix and the namespace declarations there are required. Every
``xsi:type`` the emulator returns must be defined here, and every field that a
client reads through xnatpy's generated classes (frametree-xnat reads a session's
``date``, ``time``, ``visit_id``, ``age`` and ``modality``, a scan's ``type``,
``quality`` and ``ID``): a field missing here is an AttributeError in the client
before it sends anything. Types matter too: xnatpy converts ``xs:date``,
``xs:time`` and ``xs:float`` values into Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SCAN_TYPES", "SESSION_TYPES", "XNAT_XSD"]

#: Experiment types the emulator accepts on create, with the modality of their sessions.
SESSION_TYPES: Mapping[str, str] = {"xnat:mrSessionData": "MR", "xnat:eegSessionData": "EEG"}
#: Scan types the emulator accepts on create.
SCAN_TYPES = frozenset({"xnat:mrScanData", "xnat:eegScanData"})

# Custom fields (``fields/field[name=...]``), as projects, subjects and experiments have them.
_FIELDS = """      <xs:element name="fields" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="field" minOccurs="0" maxOccurs="unbounded">
            <xs:annotation><xs:appinfo><xdat:element displayIdentifiers="name"/></xs:appinfo>
            </xs:annotation>
            <xs:complexType><xs:simpleContent>
              <xs:extension base="xs:string">
                <xs:attribute name="name" type="xs:string" use="required"/>
              </xs:extension>
            </xs:simpleContent></xs:complexType>
          </xs:element>
        </xs:sequence></xs:complexType>
      </xs:element>
"""

XNAT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema targetNamespace="http://nrg.wustl.edu/xnat" xmlns:xnat="http://nrg.wustl.edu/xnat" \
xmlns:xdat="http://nrg.wustl.edu/xdat" xmlns:xs="http://www.w3.org/2001/XMLSchema" \
elementFormDefault="qualified" attributeFormDefault="unqualified">
  <xs:element name="Project" type="xnat:projectData"/>
  <xs:element name="Subject" type="xnat:subjectData"/>
  <xs:element name="MRSession" type="xnat:mrSessionData"/>
  <xs:element name="EEGSession" type="xnat:eegSessionData"/>
  <xs:element name="MRScan" type="xnat:mrScanData"/>
  <xs:element name="EEGScan" type="xnat:eegScanData"/>
  <xs:element name="Resource" type="xnat:resource"/>
  <xs:element name="ResourceCatalog" type="xnat:resourceCatalog"/>

  <xs:complexType name="abstractResource">
    <xs:annotation><xs:appinfo><xdat:element abstract="true"/></xs:appinfo></xs:annotation>
    <xs:attribute name="label" type="xs:string"/>
    <xs:attribute name="file_count" type="xs:integer"/>
    <xs:attribute name="file_size" type="xs:long"/>
  </xs:complexType>

  <xs:complexType name="resource">
    <xs:complexContent>
      <xs:extension base="xnat:abstractResource">
        <xs:attribute name="URI" type="xs:string"/>
        <xs:attribute name="format" type="xs:string"/>
        <xs:attribute name="content" type="xs:string"/>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="resourceCatalog">
    <xs:complexContent>
      <xs:extension base="xnat:resource"/>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="projectData">
    <xs:sequence>
      <xs:element name="name" type="xs:string" minOccurs="0"/>
      <xs:element name="description" type="xs:string" minOccurs="0"/>
@FIELDS@      <xs:element name="resources" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="resource" type="xnat:abstractResource" minOccurs="0"
            maxOccurs="unbounded"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:sequence>
    <xs:attribute name="ID" type="xs:string" use="required"/>
    <xs:attribute name="secondary_ID" type="xs:string"/>
  </xs:complexType>

  <xs:complexType name="subjectData">
    <xs:annotation><xs:appinfo><xdat:element displayIdentifiers="label"/></xs:appinfo>
    </xs:annotation>
    <xs:sequence>
      <xs:element name="resources" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="resource" type="xnat:abstractResource" minOccurs="0"
            maxOccurs="unbounded"/>
        </xs:sequence></xs:complexType>
      </xs:element>
@FIELDS@      <xs:element name="experiments" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="experiment" type="xnat:subjectAssessorData" minOccurs="0"
            maxOccurs="unbounded"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:sequence>
    <xs:attribute name="ID" type="xs:string"/>
    <xs:attribute name="project" type="xs:string"/>
    <xs:attribute name="label" type="xs:string"/>
  </xs:complexType>

  <xs:complexType name="experimentData">
    <xs:annotation><xs:appinfo><xdat:element displayIdentifiers="label"/></xs:appinfo>
    </xs:annotation>
    <xs:sequence>
      <xs:element name="date" type="xs:date" minOccurs="0"/>
      <xs:element name="time" type="xs:time" minOccurs="0"/>
      <xs:element name="visit_id" type="xs:string" minOccurs="0"/>
      <xs:element name="note" type="xs:string" minOccurs="0"/>
      <xs:element name="resources" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="resource" type="xnat:abstractResource" minOccurs="0"
            maxOccurs="unbounded"/>
        </xs:sequence></xs:complexType>
      </xs:element>
@FIELDS@    </xs:sequence>
    <xs:attribute name="ID" type="xs:string" use="required"/>
    <xs:attribute name="project" type="xs:string" use="required"/>
    <xs:attribute name="label" type="xs:string"/>
  </xs:complexType>

  <xs:complexType name="subjectAssessorData">
    <xs:complexContent>
      <xs:extension base="xnat:experimentData">
        <xs:sequence>
          <xs:element name="subject_ID" type="xs:string" minOccurs="0"/>
          <xs:element name="age" type="xs:float" minOccurs="0"/>
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="imageSessionData">
    <xs:complexContent>
      <xs:extension base="xnat:subjectAssessorData">
        <xs:sequence>
          <xs:element name="modality" type="xs:string" minOccurs="0"/>
          <xs:element name="scans" minOccurs="0">
            <xs:complexType><xs:sequence>
              <xs:element name="scan" type="xnat:imageScanData" minOccurs="0"
                maxOccurs="unbounded"/>
            </xs:sequence></xs:complexType>
          </xs:element>
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="mrSessionData">
    <xs:complexContent>
      <xs:extension base="xnat:imageSessionData"/>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="eegSessionData">
    <xs:complexContent>
      <xs:extension base="xnat:imageSessionData"/>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="imageScanData">
    <xs:sequence>
      <xs:element name="note" type="xs:string" minOccurs="0"/>
      <xs:element name="quality" type="xs:string" minOccurs="0"/>
      <xs:element name="series_description" type="xs:string" minOccurs="0"/>
      <xs:element name="file" type="xnat:abstractResource" minOccurs="0"
        maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:attribute name="ID" type="xs:string" use="required"/>
    <xs:attribute name="type" type="xs:string"/>
    <xs:attribute name="image_session_ID" type="xs:string"/>
  </xs:complexType>

  <xs:complexType name="mrScanData">
    <xs:complexContent>
      <xs:extension base="xnat:imageScanData"/>
    </xs:complexContent>
  </xs:complexType>

  <xs:complexType name="eegScanData">
    <xs:complexContent>
      <xs:extension base="xnat:imageScanData"/>
    </xs:complexContent>
  </xs:complexType>
</xs:schema>
""".replace("@FIELDS@", _FIELDS)
