<?xml version="1.0" encoding="utf-8"?>
<!-- Renders rss.xml and atom.xml as a readable page when someone opens a feed in a browser.
     Feed readers ignore it. Referenced by the xml-stylesheet processing instruction in each feed. -->
<xsl:stylesheet version="1.0"
  xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:atom="http://www.w3.org/2005/Atom"
  exclude-result-prefixes="atom">
  <xsl:output method="html" encoding="utf-8" indent="yes" doctype-system="about:legacy-compat"/>

  <xsl:template match="/">
    <xsl:variable name="title" select="/rss/channel/title | /atom:feed/atom:title"/>
    <xsl:variable name="description" select="/rss/channel/description | /atom:feed/atom:subtitle"/>
    <xsl:variable name="self" select="/rss/channel/atom:link[@rel='self']/@href | /atom:feed/atom:link[@rel='self']/@href"/>
    <xsl:variable name="site" select="/rss/channel/link | /atom:feed/atom:link[@rel='alternate']/@href"/>
    <html lang="{/rss/channel/language | /atom:feed/@xml:lang}">
      <head>
        <meta charset="utf-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title><xsl:value-of select="$title"/> (feed)</title>
        <style>
          body { font-family: Arial, Helvetica, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1f2a37; line-height: 1.5; }
          a { color: #1f5fa8; }
          .note { background: #fff6e5; border: 1px solid #f0c36d; padding: .8rem 1rem; border-radius: 6px; }
          code { background: #eef0f3; padding: .1rem .3rem; word-break: break-all; }
          .item { border-top: 1px solid #dde1e7; padding: .8rem 0; }
          .date { color: #5b6675; font-size: .9rem; }
        </style>
      </head>
      <body>
        <p class="note"><strong>This is a web feed.</strong> To follow it, copy this address into your feed reader
          (Feedly, Inoreader, NetNewsWire, Thunderbird, …): <a href="{$self}"><code><xsl:value-of select="$self"/></code></a></p>
        <h1><xsl:value-of select="$title"/></h1>
        <p><xsl:value-of select="$description"/></p>
        <p><a href="{$site}">Visit the site</a></p>
        <xsl:apply-templates select="/rss/channel/item | /atom:feed/atom:entry"/>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="item">
    <div class="item">
      <h2><a href="{link}"><xsl:value-of select="title"/></a></h2>
      <div class="date"><xsl:value-of select="pubDate"/></div>
      <!-- RSS descriptions are HTML (here: the HTML of the summary's text), shown as HTML. -->
      <p><xsl:value-of select="description" disable-output-escaping="yes"/></p>
    </div>
  </xsl:template>

  <xsl:template match="atom:entry">
    <div class="item">
      <h2><a href="{atom:link[@rel='alternate']/@href}"><xsl:value-of select="atom:title"/></a></h2>
      <div class="date"><xsl:value-of select="substring(atom:published, 1, 10)"/></div>
      <p><xsl:value-of select="atom:summary"/></p>
    </div>
  </xsl:template>
</xsl:stylesheet>
