/* cherryq Vulkan backend: one descriptor set layout (CQ_VK_MAX_BIND storage
 * buffers) and one pipeline layout (128 bytes of push constants) shared by
 * every shader; compute pipelines are built on first use with the
 * workgroup size and the device's subgroup size as specialization constants,
 * through an in-memory VkPipelineCache. */
#include <stdio.h>

#include "vk_internal.h"

int cq_vk_pipe_init(cq_vk *vk)
{
    VkDescriptorSetLayoutBinding b[CQ_VK_MAX_BIND];
    for (int i = 0; i < CQ_VK_MAX_BIND; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = (uint32_t)i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = CQ_VK_MAX_BIND,
        .pBindings = b,
    };
    VkResult vr = vkCreateDescriptorSetLayout(vk->dev, &dci, NULL, &vk->dsl);
    if (vr != VK_SUCCESS) goto fail;
    VkPushConstantRange pr = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = CQ_VK_PUSH_SIZE };
    VkPipelineLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &vk->dsl,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pr,
    };
    vr = vkCreatePipelineLayout(vk->dev, &lci, NULL, &vk->layout);
    if (vr != VK_SUCCESS) goto fail;
    VkPipelineCacheCreateInfo cci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };
    vr = vkCreatePipelineCache(vk->dev, &cci, NULL, &vk->cache);
    if (vr != VK_SUCCESS) vk->cache = VK_NULL_HANDLE; /* optional */
    return CQ_OK;
fail:
    cq_error("vulkan: cannot create the pipeline layout on %s: %s", vk->caps.name, cq_vk_result_str(vr));
    return cq_vk_status(vr);
}

int cq_vk_pipeline(cq_vk *vk, cq_vk_shader_id id, VkPipeline *out)
{
    if (vk->pipes[id]) {
        *out = vk->pipes[id];
        return CQ_OK;
    }
    const cq_vk_shader *sh = cq_vk_shader_get(id);
    if (!sh) return CQ_EINVAL;
    if (sh->wg > vk->caps.max_wg_inv || sh->wg > vk->caps.max_wg_size[0]) {
        cq_error("vulkan: shader %s needs %u invocations per workgroup; %s allows %u", sh->name, sh->wg,
                 vk->caps.name, vk->caps.max_wg_inv);
        return CQ_ENOTSUP;
    }
    if (sh->needs_subgroup_arith && !vk->caps.subgroup_arith) {
        cq_error("vulkan: shader %s needs subgroup arithmetic, which %s lacks", sh->name, vk->caps.name);
        return CQ_ENOTSUP;
    }
    VkShaderModuleCreateInfo mci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = sh->size,
        .pCode = sh->code,
    };
    VkResult vr = vkCreateShaderModule(vk->dev, &mci, NULL, &vk->mods[id]);
    if (vr != VK_SUCCESS) {
        vk->mods[id] = VK_NULL_HANDLE;
        cq_error("vulkan: cannot load shader %s on %s: %s", sh->name, vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    uint32_t spec[2] = { sh->wg, vk->caps.subgroup_size };
    VkSpecializationMapEntry ent[2] = {
        { .constantID = 0, .offset = 0, .size = 4 },
        { .constantID = 1, .offset = 4, .size = 4 },
    };
    VkSpecializationInfo si = { .mapEntryCount = 2, .pMapEntries = ent, .dataSize = sizeof spec, .pData = spec };
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = vk->mods[id],
            .pName = "main",
            .pSpecializationInfo = &si,
        },
        .layout = vk->layout,
    };
    vr = vkCreateComputePipelines(vk->dev, vk->cache, 1, &pci, NULL, &vk->pipes[id]);
    if (vr != VK_SUCCESS) {
        vk->pipes[id] = VK_NULL_HANDLE;
        cq_error("vulkan: cannot build pipeline %s on %s: %s", sh->name, vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    *out = vk->pipes[id];
    return CQ_OK;
}

void cq_vk_pipe_fini(cq_vk *vk)
{
    for (int i = 0; i < CQ_VK_SH_COUNT; i++) {
        if (vk->pipes[i]) vkDestroyPipeline(vk->dev, vk->pipes[i], NULL);
        if (vk->mods[i]) vkDestroyShaderModule(vk->dev, vk->mods[i], NULL);
        vk->pipes[i] = VK_NULL_HANDLE;
        vk->mods[i] = VK_NULL_HANDLE;
    }
    if (vk->cache) vkDestroyPipelineCache(vk->dev, vk->cache, NULL);
    if (vk->layout) vkDestroyPipelineLayout(vk->dev, vk->layout, NULL);
    if (vk->dsl) vkDestroyDescriptorSetLayout(vk->dev, vk->dsl, NULL);
    vk->cache = VK_NULL_HANDLE;
    vk->layout = VK_NULL_HANDLE;
    vk->dsl = VK_NULL_HANDLE;
}
